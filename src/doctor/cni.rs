//! The node's CNI as files show it: which flavour's layout holds a conflist, the chain's
//! plugin binaries, the `bandwidth` plugin's version, and the known-bad combinations of
//! `shared/research/cni.md` (Calico ≥ 3.30, Cilium's bandwidth manager, plugin v1.5.x).

use crate::codes::Code;
use crate::diagnostic::{Diagnostic, Severity};
use crate::model::Cni;

use super::node::Node;

pub use crate::cni::flavour::{K3S_BIN_DIR, OPT_CNI_BIN};
const ETC_CNI: &str = "/etc/cni/net.d";
const K3S_CONF_DIR: &str = "/var/lib/rancher/k3s/agent/etc/cni/net.d";

/// A flavour's layout found on the node.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The name a policy's `cni` statement uses (`cilium` and `unknown` have none).
    pub name: String,
    pub cni: Option<Cni>,
    pub conf_dir: &'static str,
    pub bin_dir: &'static str,
    /// The conflist's node path.
    pub conflist: String,
}

/// The first layout with a conflist: K3s, then RKE2 (`/var/lib/rancher/rke2`), then the
/// file names of upstream flannel, Canal, Calico and Cilium in `/etc/cni/net.d`, then any
/// conflist there.
pub fn detect(node: &dyn Node) -> Option<Found> {
    // The bin dir is the flavour's (`cni::flavour`); Cilium and unknown CNIs use the default.
    let found = |name: &str, cni: Option<Cni>, conf_dir, file: &str| {
        let bin_dir = cni
            .as_ref()
            .map_or(OPT_CNI_BIN, |c| crate::cni::flavour::of(c).bin_dir);
        Found {
            name: name.into(),
            cni,
            conf_dir,
            bin_dir,
            conflist: format!("{conf_dir}/{file}"),
        }
    };
    if node.exists(&format!("{K3S_CONF_DIR}/10-flannel.conflist")) {
        return Some(found(
            "k3s",
            Some(Cni::K3s),
            K3S_CONF_DIR,
            "10-flannel.conflist",
        ));
    }
    let files = node.list(ETC_CNI);
    let has = |f: &str| files.iter().any(|x| x == f);
    if node.exists("/var/lib/rancher/rke2") {
        if has("10-canal.conflist") {
            return Some(found(
                "rke2-canal",
                Some(Cni::Rke2Canal),
                ETC_CNI,
                "10-canal.conflist",
            ));
        }
        if has("10-flannel.conflist") {
            return Some(found(
                "rke2-flannel",
                Some(Cni::Rke2Flannel),
                ETC_CNI,
                "10-flannel.conflist",
            ));
        }
    }
    for (file, name, cni) in [
        ("10-canal.conflist", "canal", Some(Cni::Canal)),
        ("10-calico.conflist", "calico", Some(Cni::Calico)),
        ("10-flannel.conflist", "flannel", Some(Cni::Flannel)),
        ("05-cilium.conflist", "cilium", None),
    ] {
        if has(file) {
            return Some(found(name, cni, ETC_CNI, file));
        }
    }
    let any = files.iter().find(|f| f.ends_with(".conflist"))?;
    let path = format!("{ETC_CNI}/{any}");
    Some(found("unknown", Some(Cni::File(path)), ETC_CNI, any))
}

/// The `type` of each plugin entry of a conflist, or why it cannot be read.
pub fn chain(text: &str) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let plugins = v
        .get("plugins")
        .and_then(|p| p.as_array())
        .ok_or("no `plugins` array")?;
    Ok(plugins
        .iter()
        .filter_map(|p| p.get("type")?.as_str().map(str::to_string))
        .collect())
}

/// What the policy's `pods` block asks of the CNI (`None`: the policy has none).
pub struct PolicyPods<'a> {
    pub cni: Option<&'a Cni>,
}

/// The CNI findings of the node (and of the policy's `pods` block, if given).
pub fn findings(node: &dyn Node, pods: Option<PolicyPods<'_>>) -> Vec<Diagnostic> {
    let Some(f) = detect(node) else {
        return vec![no_conflist(pods.is_some())];
    };
    let mut out = vec![flavour(&f)];
    if let Some(PolicyPods { cni: Some(want) }) = &pods
        && f.cni.as_ref() != Some(*want)
    {
        out.push(flavour_mismatch(&f, want));
    }
    let text = node.read(&f.conflist).unwrap_or_default();
    let types = match chain(&text) {
        Ok(t) => t,
        Err(e) => {
            out.push(
                Diagnostic::new(
                    Code::NQ104,
                    format!("cannot read the chain of {}: {e}", f.conflist),
                )
                .help(
                    "the runtime cannot read it either; `netqos check --conflist FILE` shows where",
                ),
            );
            return out;
        }
    };
    let bin = |t: &str| format!("{}/{t}", f.bin_dir);
    out.extend(missing_plugins(node, &f, &types));
    out.extend(chain_findings(node, &f, &types, pods.is_some()));
    if node.exists(&bin("bandwidth")) {
        out.extend(version_findings(node, &bin("bandwidth")));
    }
    out
}

/// NQ110: no conflist in either conf dir (an error when the policy has a `pods` block).
fn no_conflist(has_pods: bool) -> Diagnostic {
    let mut d = Diagnostic::new(
        Code::NQ110,
        format!("no CNI conflist in {ETC_CNI} or {K3S_CONF_DIR}"),
    )
    .help("on a node that runs pods, check the container runtime's CNI conf_dir");
    if has_pods {
        d = d.severity(Severity::Error);
    }
    d
}

/// NQ101: the CNI flavour found, its files and how a policy names it.
fn flavour(f: &Found) -> Diagnostic {
    Diagnostic::new(
        Code::NQ101,
        format!(
            "CNI flavour {}: conflist {}, conf dir {}, bin dir {}",
            f.name, f.conflist, f.conf_dir, f.bin_dir
        ),
    )
    .help(match &f.cni {
        Some(Cni::File(p)) => format!("name it in the policy as `cni file \"{p}\"`"),
        Some(c) => format!(
            "a policy's `pods` block here says `cni {}`",
            crate::cni::flavour::name(c)
        ),
        None => "netqos does not patch this CNI; pod limits need its own shaping".into(),
    })
}

/// NQ109: the policy's `cni` is not the node's.
fn flavour_mismatch(f: &Found, want: &Cni) -> Diagnostic {
    Diagnostic::new(
        Code::NQ109,
        format!(
            "the policy says `cni {}` but the node has {} ({})",
            crate::cni::flavour::name(want),
            f.name,
            f.conflist
        ),
    )
    .help(
        "name the node's flavour in the `pods` block, or run doctor on the node the policy is for",
    )
}

/// NQ104 for each chained plugin whose binary is not in the bin dir.
fn missing_plugins(node: &dyn Node, f: &Found, types: &[String]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let bin = |t: &str| format!("{}/{t}", f.bin_dir);
    for t in types {
        if !node.exists(&bin(t)) {
            out.push(
                Diagnostic::new(
                    Code::NQ104,
                    format!(
                        "{} chains `{t}` but {} is missing: every pod sandbox fails (\"failed to find plugin\")",
                        f.conflist,
                        bin(t)
                    ),
                )
                .help(if t == "bandwidth" {
                    "install the CNI reference plugins (containernetworking/plugins ≥ v1.6.0) into the bin dir, or remove the `bandwidth` entry (Calico ≥ 3.30 shapes pods itself)"
                } else {
                    "install the plugin into the bin dir, or fix the chain"
                }),
            );
        }
    }
    out
}

/// What the chain says about pod shaping: Calico (NQ106), Cilium (NQ107), and the
/// `bandwidth` plugin a `pods` block needs (NQ104).
fn chain_findings(node: &dyn Node, f: &Found, types: &[String], has_pods: bool) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let bin = |t: &str| format!("{}/{t}", f.bin_dir);
    let has_bw = types.iter().any(|t| t == "bandwidth");
    let calico = types.iter().any(|t| t == "calico");
    if calico && !has_bw {
        out.push(
            Diagnostic::new(
                Code::NQ106,
                format!("{} chains `calico` without `bandwidth`: Calico ≥ 3.30 shapes pods itself (Felix)", f.conflist),
            )
            .help("pod annotations work without the plugin; do not add it (Felix deletes its bwp* IFBs and calico/cni no longer ships it)"),
        );
    }
    if types.iter().any(|t| t == "cilium-cni") {
        out.push(
            Diagnostic::new(
                Code::NQ107,
                format!("{} is Cilium's: its bandwidth manager owns the NIC root qdisc (mq + fq)", f.conflist),
            )
            .help("do not shape the NIC Cilium manages with a netqos root, or disable Cilium's bandwidth manager first"),
        );
    }
    // The plugin netqos's conflist patch chains (or the one already chained).
    let needs_bw = has_pods && !calico && f.cni.is_some();
    if needs_bw && !has_bw && !node.exists(&bin("bandwidth")) {
        out.push(
            Diagnostic::new(
                Code::NQ104,
                format!(
                    "the policy's `pods` block chains `bandwidth` into {} but {} is missing",
                    f.conflist,
                    bin("bandwidth")
                ),
            )
            .help("install the CNI reference plugins (≥ v1.6.0) into the bin dir before applying"),
        );
    }
    out
}

/// NQ102 with the plugin's release and spec versions, NQ103 when it does not answer,
/// NQ105 for a release with known problems.
fn version_findings(node: &dyn Node, path: &str) -> Vec<Diagnostic> {
    let v = match node.plugin_version(path) {
        Ok(v) => v,
        Err(e) => {
            return vec![
                Diagnostic::new(
                    Code::NQ103,
                    format!("the bandwidth plugin did not answer VERSION: {e}"),
                )
                .help("the runtime runs it the same way; reinstall the CNI reference plugins"),
            ];
        }
    };
    let release = v
        .release
        .clone()
        .unwrap_or_else(|| "release unknown".into());
    let mut out = vec![Diagnostic::new(
        Code::NQ102,
        format!(
            "bandwidth plugin {path}: {release}, CNI spec {}",
            v.spec_versions.join(", ")
        ),
    )];
    let parsed = v.release.as_deref().and_then(parse_release);
    if let Some((maj, min, patch)) = parsed {
        let bad = if (maj, min) == (1, 5) {
            Some(
                "v1.5.x shapes with HTB (reverted in v1.6.0 for r2q/quantum warnings and txqueuelen problems)",
            )
        } else if (maj, min, patch) < (0, 8, 3) {
            Some("before v0.8.3 rates and bursts are 32-bit and bursts above 4 GB overflow")
        } else {
            None
        };
        if let Some(why) = bad {
            out.push(
                Diagnostic::new(Code::NQ105, format!("bandwidth plugin {release}: {why}"))
                    .help("upgrade the CNI reference plugins to v1.6.0 or later"),
            );
        }
    }
    out
}

/// `v1.6.2` → (1, 6, 2).
fn parse_release(r: &str) -> Option<(u32, u32, u32)> {
    let mut it = r.trim_start_matches('v').split(['.', '-', '+']);
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next().and_then(|p| p.parse().ok()).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::node::{LinkInfo, PluginVersion};
    use super::*;
    use std::collections::BTreeMap;

    /// A node made of a path → contents map; `bandwidth` answers with `release`.
    struct Fake {
        files: BTreeMap<String, String>,
        release: Result<&'static str, &'static str>,
    }

    impl Node for Fake {
        fn describe(&self) -> String {
            "fake".into()
        }
        fn readable(&self) -> Result<(), String> {
            Ok(())
        }
        fn read(&self, path: &str) -> Option<String> {
            self.files.get(path).cloned()
        }
        fn exists(&self, path: &str) -> bool {
            self.files
                .keys()
                .any(|k| k == path || k.starts_with(&format!("{path}/")))
        }
        fn list(&self, dir: &str) -> Vec<String> {
            let prefix = format!("{dir}/");
            self.files
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|k| !k.contains('/'))
                .map(str::to_string)
                .collect()
        }
        fn links(&self) -> Vec<LinkInfo> {
            Vec::new()
        }
        fn root_qdiscs(&self, _: &[String]) -> Option<Vec<(String, String)>> {
            None
        }
        fn plugin_version(&self, _: &str) -> Result<PluginVersion, String> {
            self.release.map_err(str::to_string).map(|r| PluginVersion {
                release: Some(r.into()),
                spec_versions: vec!["0.3.0".into(), "1.0.0".into()],
            })
        }
    }

    fn fake(files: &[(&str, &str)]) -> Fake {
        Fake {
            files: files
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            release: Ok("v1.6.2"),
        }
    }

    const CHAIN: &str =
        r#"{"plugins":[{"type":"flannel"},{"type":"portmap"},{"type":"bandwidth"}]}"#;

    fn codes(d: &[Diagnostic]) -> Vec<Code> {
        d.iter().map(|d| d.code).collect()
    }

    #[test]
    fn k3s_layout_with_every_binary_is_clean() {
        let node = fake(&[
            (
                "/var/lib/rancher/k3s/agent/etc/cni/net.d/10-flannel.conflist",
                CHAIN,
            ),
            ("/var/lib/rancher/k3s/data/current/bin/flannel", ""),
            ("/var/lib/rancher/k3s/data/current/bin/portmap", ""),
            ("/var/lib/rancher/k3s/data/current/bin/bandwidth", ""),
        ]);
        let d = findings(&node, None);
        assert_eq!(codes(&d), vec![Code::NQ101, Code::NQ102]);
        assert!(d[0].message.contains("k3s") && d[0].message.contains(K3S_BIN_DIR));
        assert!(d[1].message.contains("v1.6.2"));
    }

    #[test]
    fn a_chained_plugin_without_its_binary_is_an_error() {
        let node = fake(&[
            ("/etc/cni/net.d/10-flannel.conflist", CHAIN),
            ("/opt/cni/bin/flannel", ""),
            ("/opt/cni/bin/portmap", ""),
        ]);
        let d = findings(&node, None);
        assert_eq!(codes(&d), vec![Code::NQ101, Code::NQ104]);
        assert!(d[1].is_error() && d[1].message.contains("/opt/cni/bin/bandwidth"));
    }

    #[test]
    fn known_bad_releases_and_silent_plugins_are_named() {
        let mut node = fake(&[
            ("/etc/cni/net.d/10-flannel.conflist", CHAIN),
            ("/opt/cni/bin/flannel", ""),
            ("/opt/cni/bin/portmap", ""),
            ("/opt/cni/bin/bandwidth", ""),
        ]);
        node.release = Ok("v1.5.1");
        assert!(codes(&findings(&node, None)).contains(&Code::NQ105));
        node.release = Ok("v0.8.2");
        assert!(codes(&findings(&node, None)).contains(&Code::NQ105));
        node.release = Ok("v1.6.0");
        assert!(!codes(&findings(&node, None)).contains(&Code::NQ105));
        node.release = Err("hung");
        assert!(codes(&findings(&node, None)).contains(&Code::NQ103));
    }

    #[test]
    fn policy_flavour_and_missing_bandwidth_for_the_patch() {
        let node = fake(&[
            (
                "/etc/cni/net.d/10-flannel.conflist",
                r#"{"plugins":[{"type":"flannel"}]}"#,
            ),
            ("/opt/cni/bin/flannel", ""),
        ]);
        let d = findings(
            &node,
            Some(PolicyPods {
                cni: Some(&Cni::K3s),
            }),
        );
        assert_eq!(codes(&d), vec![Code::NQ101, Code::NQ109, Code::NQ104]);
        let d = findings(
            &node,
            Some(PolicyPods {
                cni: Some(&Cni::Flannel),
            }),
        );
        assert_eq!(codes(&d), vec![Code::NQ101, Code::NQ104]);
        assert!(d[1].message.contains("policy's `pods` block"));
    }

    #[test]
    fn no_conflist_is_a_warning_without_pods_and_an_error_with_them() {
        let node = fake(&[]);
        assert!(!findings(&node, None)[0].is_error());
        assert!(findings(&node, Some(PolicyPods { cni: None }))[0].is_error());
    }
}
