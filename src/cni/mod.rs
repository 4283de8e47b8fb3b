//! Pod limits and the CNI: the `conflist` artefact (RFC 6902 patch, reverse patch, patched
//! file and the flavour's durable source) and the `annotations` artefact (kustomize patches).
//! Pure: the CLI reads the conflist and writes the files.

pub mod annotations;
pub mod burst;
pub mod conflist;
pub mod flavour;
pub mod json_patch;
pub mod json_spans;
pub mod netqos_entry;
pub mod runtime_burst;

use std::fmt::Write as _;

use crate::diagnostic::Diagnostic;
use crate::model::Pods;
use conflist::Outcome;
use flavour::{Default as FlavourDefault, Durable};

/// Files of the `conflist` artefact (paths relative to the output directory) and what they
/// mean, in sentences for the operator.
#[derive(Debug, Clone, Default)]
pub struct ConflistArtefacts {
    pub files: Vec<(String, String)>,
    pub summary: Vec<String>,
    /// What the scripts install on the node, when there is something to change.
    pub install: Option<Install>,
}

/// The conflist change for the apply and rollback scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// The conflist's path on the node.
    pub path: String,
    /// The text the patch was computed from, and the patched text.
    pub original: String,
    pub patched: String,
    /// Computed from the node's own file (`--conflist`) rather than a flavour's default.
    pub from_node: bool,
    /// The CNI bin dir that must hold an executable `netqos` before this conflist may be
    /// installed (the patched text names the plugin).
    pub plugin_dir: Option<String>,
}

/// The node's conflist as read from `--conflist FILE`.
#[derive(Debug, Clone, Copy)]
pub struct NodeConflist<'a> {
    pub path: &'a str,
    pub text: &'a str,
}

/// Works out the conflist artefacts for the policy's `pods` block. `Err` carries diagnostics
/// about the conflist text (its own source), at least one of them an error. A conflist the
/// analysis leaves as it is with only warnings (static rates, NQ035, when the policy sets no
/// pod limits) is `Ok` with empty patches and no install; the summary says why, and the
/// warnings come with the conflist's own analysis ([`conflist::analyse`]).
pub fn conflist_artefacts(
    pods: &Pods,
    node: Option<&NodeConflist<'_>>,
) -> Result<ConflistArtefacts, Vec<Diagnostic>> {
    let mut out = ConflistArtefacts::default();
    let flavour = pods.cni.as_ref().map(flavour::of);
    let Some((base, base_name)) = base(pods, node, flavour.as_ref(), &mut out) else {
        return Ok(out);
    };
    let (outcome, diags) = conflist::analyse(&base, !pods.limits.is_empty());
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    let Some(outcome) = outcome else {
        // Warnings only: netqos leaves the file as it is (NQ035's explanation says so).
        for d in &diags {
            out.summary.push(format!(
                "{base_name}: {} ({}): netqos leaves it as it is{}",
                d.message,
                d.code,
                if pods.burst.is_some() {
                    " and chains no netqos entry for `burst`"
                } else {
                    ""
                }
            ));
        }
        empty_patches(&mut out);
        return Ok(out);
    };
    let chained = match &pods.burst {
        Some(burst) => netqos_entry::chain(&base, outcome, burst),
        None => netqos_entry::unchain(&base, outcome),
    }
    .map_err(|d| vec![d])?;
    let netqos_summary = chained.summary;
    match chained.outcome {
        Outcome::Present { index } => {
            out.summary.push(format!(
                "{base_name} already chains bandwidth (entry {index}) with the capability: nothing to do"
            ));
            empty_patches(&mut out);
        }
        Outcome::CalicoNative => {
            out.summary.push(format!(
                "{base_name} chains calico without bandwidth: Calico 3.30+ shapes pods itself; netqos leaves it alone"
            ));
            empty_patches(&mut out);
        }
        Outcome::Patch(p) => {
            if p.main == "bandwidth" {
                out.summary.push(format!("patches {base_name}"));
            } else {
                out.summary.push(format!(
                    "adds the bandwidth entry at /plugins/{} right after `{}` in {base_name}",
                    p.index, p.main
                ));
            }
            patch_files(p, base, node, flavour.as_ref(), &mut out);
        }
    }
    if let Some(s) = netqos_summary {
        let at = out.summary.len().min(1);
        out.summary.insert(at, s);
    }
    Ok(out)
}

/// The conflist the patch is computed from and how to name it: the node's (`--conflist`),
/// else the flavour's default. `None` when there is nothing to compute (the summary says
/// why, and the flavour's defaults that need nothing get empty patches).
fn base(
    pods: &Pods,
    node: Option<&NodeConflist<'_>>,
    flavour: Option<&flavour::Flavour>,
    out: &mut ConflistArtefacts,
) -> Option<(String, String)> {
    let f = match (node, flavour) {
        (Some(n), _) => return Some((n.text.to_string(), format!("the node's {}", n.path))),
        (None, None) => {
            // A pods block that only declares the pod network has nothing for the CNI.
            if !pods.limits.is_empty() {
                out.summary.push(
                    "the pods block names no `cni` and no --conflist was given: no conflist patch"
                        .into(),
                );
            }
            return None;
        }
        (None, Some(f)) => f,
    };
    match f.default {
        FlavourDefault::Lacks(text) => {
            return Some((
                text.to_string(),
                "the flavour's default conflist (pass --conflist FILE to patch the node's own file)"
                    .to_string(),
            ));
        }
        FlavourDefault::Has(_) if pods.burst.is_some() && f.durable == Durable::K3sFlag => {
            return Some((
                flavour::K3S_DEFAULT.to_string(),
                "K3s's conflist (pass --conflist FILE to patch the node's own file)".to_string(),
            ));
        }
        FlavourDefault::Has(_) if pods.burst.is_some() => out.summary.push(format!(
            "{} chains bandwidth already; the netqos entry for `burst` needs the node's file: pass --conflist {}",
            flavour_name(pods),
            f.conflist_path
        )),
        FlavourDefault::Has(since) => {
            out.summary.push(format!(
                "{} chains the bandwidth plugin by default since {since}: nothing to patch (pass --conflist {} to check the node's file)",
                flavour_name(pods),
                f.conflist_path
            ));
            empty_patches(out);
        }
        FlavourDefault::CalicoNative => {
            out.summary.push(format!(
                "{}: Calico 3.30 and later shape pods from the same annotations (Felix) and calico/cni no longer ships the bandwidth binary; earlier Calico manifests already chain it. netqos adds nothing",
                flavour_name(pods)
            ));
            empty_patches(out);
        }
        FlavourDefault::Unknown => out.summary.push(format!(
            "pass --conflist {} to compute the patch for this file",
            f.conflist_path
        )),
    }
    None
}

/// The files of a patch (patch, reverse, patched file, durable source) and the install.
fn patch_files(
    p: conflist::Patch,
    base: String,
    node: Option<&NodeConflist<'_>>,
    flavour: Option<&flavour::Flavour>,
    out: &mut ConflistArtefacts,
) {
    out.files
        .push(("conflist/patch.json".into(), ops_json(&p.ops)));
    out.files
        .push(("conflist/rollback-patch.json".into(), ops_json(&p.reverse)));
    // Named like the file it replaces on the node.
    let path = flavour
        .map(|f| f.conflist_path.as_str())
        .or(node.map(|n| n.path));
    let file_name = path
        .and_then(|p| p.rsplit('/').next())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .unwrap_or("cni.conflist");
    out.files
        .push((format!("conflist/{file_name}"), p.patched_text.clone()));
    if let Some(f) = flavour {
        durable(f.durable, &f.conflist_path, &p.patched_text, out);
    }
    let plugin_dir = netqos_entry::names_netqos(&p.patched_text).then(|| {
        flavour
            .map_or(flavour::OPT_CNI_BIN, |f| f.bin_dir)
            .to_string()
    });
    out.install = Some(Install {
        path: path.unwrap_or_default().to_string(),
        original: base,
        patched: p.patched_text,
        from_node: node.is_some(),
        plugin_dir,
    });
}

fn flavour_name(pods: &Pods) -> String {
    pods.cni.as_ref().map_or_else(
        || "the CNI".to_string(),
        |c| format!("`cni {}`", flavour::name(c)),
    )
}

fn empty_patches(out: &mut ConflistArtefacts) {
    out.files
        .push(("conflist/patch.json".into(), "[]\n".into()));
    out.files
        .push(("conflist/rollback-patch.json".into(), "[]\n".into()));
}

fn ops_json(ops: &[json_patch::Op]) -> String {
    let mut s = serde_json::to_string_pretty(ops).unwrap_or_else(|_| "[]".into());
    s.push('\n');
    s
}

/// The conflist JSON as a YAML block scalar body indented by `n` spaces.
fn block(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    let mut s = String::new();
    for line in text.trim_end().lines() {
        if line.trim().is_empty() {
            s.push('\n');
        } else {
            let _ = writeln!(s, "{pad}{line}");
        }
    }
    s
}

fn durable(d: Durable, path: &str, patched: &str, out: &mut ConflistArtefacts) {
    match d {
        Durable::ConfigMap {
            namespace,
            name,
            key,
            daemonset,
        } => {
            let file = format!("conflist/{name}.patch.yaml");
            out.files.push((
                file.clone(),
                format!(
                    "# netqos: the durable source of {path}.\n\
                     # The CNI's install-cni container rewrites that file from this ConfigMap\n\
                     # whenever its pod starts, so patch both.\n\
                     #   kubectl -n {namespace} patch configmap {name} --type merge --patch-file {name}.patch.yaml\n\
                     #   kubectl -n {namespace} rollout restart daemonset {daemonset}\n\
                     # Only pods created afterwards are shaped.\n\
                     data:\n  {key}: |\n{}",
                    block(patched, 4)
                ),
            ));
            out.summary.push(format!(
                "durable source: ConfigMap {namespace}/{name} key {key} ({file})"
            ));
        }
        Durable::Rke2FlannelChart => {
            let file = "conflist/rke2-flannel-config.yaml".to_string();
            out.files.push((
                file.clone(),
                format!(
                    "# netqos: the durable source of {path}\n\
                     # on RKE2 with cni: flannel. Put this file in\n\
                     # /var/lib/rancher/rke2/server/manifests/ on a server node (merge it by hand if a\n\
                     # HelmChartConfig named rke2-flannel exists already). RKE2 redeploys the chart and\n\
                     # flannel rewrites the conflist on every node.\n\
                     apiVersion: helm.cattle.io/v1\n\
                     kind: HelmChartConfig\n\
                     metadata:\n  name: rke2-flannel\n  namespace: kube-system\n\
                     spec:\n  valuesContent: |-\n    flannel:\n      cniConf: |\n{}",
                    block(patched, 8)
                ),
            ));
            out.summary
                .push(format!("durable source: HelmChartConfig kube-system/rke2-flannel ({file})"));
        }
        Durable::K3sFlag => {
            let target = "/etc/rancher/k3s/flannel-cni.conflist";
            out.files.push((
                "conflist/k3s-config.yaml".into(),
                format!(
                    "# netqos: K3s rewrites {path}\n\
                     # at every start unless --flannel-cni-conf names another file. Install\n\
                     # conflist/flannel-cni.conflist as {target}\n\
                     # and this file as /etc/rancher/k3s/config.yaml.d/netqos.yaml, then restart k3s.\n\
                     flannel-cni-conf: {target}\n"
                ),
            ));
            out.files
                .push(("conflist/flannel-cni.conflist".into(), patched.to_string()));
            out.summary.push(format!(
                "durable source: K3s --flannel-cni-conf {target} (conflist/k3s-config.yaml)"
            ));
        }
        Durable::Unknown => out.summary.push(format!(
            "{path} is patched in place only: if a CNI daemonset writes it, patch that source too or the change is lost at its next restart"
        )),
    }
}
