//! The artefact kinds and the one context every renderer reads.
//!
//! Adding a kind: a variant of [`Artefact`] (its doc comment is the `--emit` help), its row
//! in [`Artefact::info`], and its arm in [`Artefact::render`] calling its renderer.

use serde::Serialize;

use super::{CniInstall, Templates};
use crate::cni::ConflistArtefacts;
use crate::model::Pods;
use crate::plan::Plan;

/// An artefact `compile --emit` can write. The order is the order they are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Artefact {
    /// The apply script: one `tc -batch` building the whole tree.
    Tc,
    /// The rollback script: removes netqos's objects, in safe order.
    Rollback,
    /// The IR as JSON (`netqos-plan/1`).
    Plan,
    /// Each hierarchy as text, for review, in the policy's words (`-v`: with the u32 filters).
    Tree,
    /// Each hierarchy as an SVG picture for pull requests: bars for guarantees and ceilings.
    Svg,
    /// A `#cloud-config` installing the scripts and the unit.
    CloudInit,
    /// A oneshot systemd unit applying the policy at boot.
    Systemd,
    /// A systemd service running `netqos agent` (notify, watchdog, hardened).
    AgentService,
    /// The CNI conflist patch, its reverse, the patched file and its durable source.
    Conflist,
    /// Kustomize patches with the pod bandwidth annotations.
    Annotations,
}

/// What is fixed about an artefact kind.
#[derive(Debug, Clone, Copy)]
pub struct Info {
    /// The `--emit` name.
    pub name: &'static str,
    /// The file it is written to (the `conflist` kind writes a directory of that name).
    pub file_name: &'static str,
    /// It needs the policy's `pods` block.
    pub needs_pods: bool,
    /// It carries the conflist change (so the conflist is worked out when it is chosen).
    pub uses_conflist: bool,
}

impl Artefact {
    /// Every kind, in writing order.
    pub const ALL: [Artefact; 10] = [
        Artefact::Tc,
        Artefact::Rollback,
        Artefact::Plan,
        Artefact::Tree,
        Artefact::Svg,
        Artefact::CloudInit,
        Artefact::Systemd,
        Artefact::AgentService,
        Artefact::Conflist,
        Artefact::Annotations,
    ];

    /// The kind's name, file and needs.
    #[must_use]
    pub const fn info(self) -> Info {
        let (name, file_name, needs_pods, uses_conflist) = match self {
            Artefact::Tc => ("tc", "netqos-apply.sh", false, true),
            Artefact::Rollback => ("rollback", "netqos-rollback.sh", false, true),
            Artefact::Plan => ("plan", "plan.json", false, false),
            Artefact::Tree => ("tree", "tree.txt", false, false),
            Artefact::Svg => ("svg", "tree.svg", false, false),
            Artefact::CloudInit => ("cloud-init", "cloud-init.yaml", false, true),
            Artefact::Systemd => ("systemd", "netqos.service", false, false),
            Artefact::AgentService => ("agent-service", "netqos-agent.service", false, false),
            Artefact::Conflist => ("conflist", "conflist", true, true),
            Artefact::Annotations => ("annotations", "annotations.yaml", true, false),
        };
        Info {
            name,
            file_name,
            needs_pods,
            uses_conflist,
        }
    }

    /// The `--emit` name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// One line saying what the artefact is (the variant's doc comment).
    #[must_use]
    pub fn description(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .and_then(|v| v.get_help().map(ToString::to_string))
            .unwrap_or_default()
    }

    /// The files of this artefact for `ctx`, as (path relative to the output directory,
    /// contents).
    pub fn render(self, ctx: &Render<'_>) -> Result<Vec<OutFile>, RenderError> {
        let one = |text: String| Ok(vec![OutFile::new(self, self.info().file_name, text)]);
        match self {
            Artefact::Tc => one(super::tc_script(ctx)?),
            Artefact::Rollback => one(super::rollback_script(ctx)?),
            Artefact::Plan => one(super::plan_json(ctx.plan)),
            Artefact::Tree => one(super::tree(ctx.plan, ctx.verbose)),
            Artefact::Svg => one(super::svg(ctx.plan)),
            Artefact::CloudInit => super::cloud_init_file(ctx, None, None),
            Artefact::Systemd => one(super::unit(ctx.plan, ctx.source)?),
            Artefact::AgentService => {
                let dir = ctx
                    .pods
                    .and_then(|p| crate::apply::conflist_file::path_for(p, None))
                    .and_then(|p| p.parent().map(|d| d.display().to_string()));
                one(super::systemd::agent_unit(ctx.source, dir.as_deref())?)
            }
            Artefact::Conflist => {
                ctx.pods.ok_or(RenderError::NeedsPods(self))?;
                let files = ctx.conflist.map_or(&[][..], |c| &c.files[..]);
                Ok(files
                    .iter()
                    .map(|(path, text)| OutFile::new(self, path, text.clone()))
                    .collect())
            }
            Artefact::Annotations => {
                let pods = ctx.pods.ok_or(RenderError::NeedsPods(self))?;
                one(crate::cni::annotations::component(pods, ctx.source))
            }
        }
    }
}

impl std::fmt::Display for Artefact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Artefact {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Everything a renderer reads: the plan, the policy's name as the artefacts show it, the
/// templates, and the policy's pod limits with their conflist change.
#[derive(Debug, Clone, Copy)]
pub struct Render<'a> {
    pub plan: &'a Plan,
    /// The policy's file name, as comments and messages in the artefacts show it.
    pub source: &'a str,
    pub templates: &'a Templates,
    /// The policy's `pods` block.
    pub pods: Option<&'a Pods>,
    /// The conflist artefact's files, worked out for `pods`.
    pub conflist: Option<&'a ConflistArtefacts>,
    /// The conflist change the scripts install and restore.
    pub cni: Option<&'a CniInstall>,
    /// Review output shows what the kernel gets too (the tree's u32 filters).
    pub verbose: bool,
}

impl<'a> Render<'a> {
    /// A context for a plan alone: no pod limits, no conflist change.
    #[must_use]
    pub fn new(plan: &'a Plan, source: &'a str, templates: &'a Templates) -> Self {
        Render {
            plan,
            source,
            templates,
            pods: None,
            conflist: None,
            cni: None,
            verbose: false,
        }
    }
}

/// One file of an artefact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFile {
    pub artefact: Artefact,
    /// Relative to the output directory.
    pub path: String,
    pub text: String,
}

impl OutFile {
    pub(crate) fn new(artefact: Artefact, path: &str, text: String) -> Self {
        OutFile {
            artefact,
            path: path.to_string(),
            text,
        }
    }
}

/// Why an artefact could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("`--emit {0}` needs a `pods` block in the policy")]
    NeedsPods(Artefact),
    /// A template (built in or from `--templates`) failed.
    #[error("{0}")]
    Template(#[from] minijinja::Error),
}
