//! The artefact kinds and the one context every renderer reads.
//!
//! Adding a kind: a variant of [`Artefact`] (its doc comment is the `--emit` help), its row
//! in [`Artefact::info`], and its arm in [`Artefact::render`] calling its renderer.

use std::borrow::Cow;
use std::io::Write;

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
        let mut files = Vec::new();
        self.write(
            ctx,
            &Scripts::default(),
            &mut |path: &str, body: Body<'_>| {
                let mut text = Vec::new();
                body(&mut text)?;
                let text = String::from_utf8(text)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                files.push(OutFile::new(self, path, text));
                Ok::<(), RenderError>(())
            },
        )?;
        Ok(files)
    }

    /// Writes the files of this artefact for `ctx` one at a time: `file(path, body)` is
    /// called for each (path relative to the output directory) and gives `body` the writer
    /// of its contents. The scripts in `scripts` are used as they are; those missing are
    /// rendered here.
    pub fn write<E: From<RenderError>>(
        self,
        ctx: &Render<'_>,
        scripts: &Scripts,
        file: &mut dyn FnMut(&str, Body<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let name = self.info().file_name;
        match self {
            Artefact::Tc => {
                let script = scripts.apply(ctx)?;
                file(name, &mut |w| Ok(script.write_to(w)?))
            }
            Artefact::Rollback => file(name, &mut text(&scripts.rollback(ctx)?)),
            Artefact::Plan => file(name, &mut |w| Ok(super::write_plan_json(ctx.plan, w)?)),
            Artefact::Tree => file(name, &mut |w| {
                Ok(super::write_tree(ctx.plan, ctx.verbose, w)?)
            }),
            Artefact::Svg => file(name, &mut |w| Ok(super::write_svg(ctx.plan, w)?)),
            Artefact::CloudInit => {
                let (apply, rollback) = (scripts.apply(ctx)?, scripts.rollback(ctx)?);
                file(name, &mut |w| {
                    super::write_cloud_init(ctx, &apply, &rollback, w)
                })
            }
            Artefact::Systemd => file(
                name,
                &mut text(&super::unit(ctx.plan, ctx.source).map_err(RenderError::from)?),
            ),
            Artefact::AgentService => {
                let dir = ctx
                    .pods
                    .and_then(|p| crate::apply::conflist_file::path_for(p, None))
                    .and_then(|p| p.parent().map(|d| d.display().to_string()));
                let unit = super::systemd::agent_unit(ctx.source, dir.as_deref())
                    .map_err(RenderError::from)?;
                file(name, &mut text(&unit))
            }
            Artefact::Conflist => {
                ctx.pods.ok_or(RenderError::NeedsPods(self))?;
                for (path, body) in ctx.conflist.map_or(&[][..], |c| &c.files[..]) {
                    file(path, &mut text(body))?;
                }
                Ok(())
            }
            Artefact::Annotations => {
                let pods = ctx.pods.ok_or(RenderError::NeedsPods(self))?;
                file(
                    name,
                    &mut text(&crate::cni::annotations::component(pods, ctx.source)),
                )
            }
        }
    }
}

/// A body writing `text` as it is.
fn text(text: &str) -> impl FnMut(&mut dyn Write) -> Result<(), RenderError> + '_ {
    move |w| Ok(w.write_all(text.as_bytes())?)
}

/// What writes one file's contents into the writer it is given.
pub type Body<'a> = &'a mut dyn FnMut(&mut dyn Write) -> Result<(), RenderError>;

/// The two scripts, when they are rendered already (they are rendered first, so that a
/// failing `--templates` template stops a compile before any file is written, and once,
/// also when `cloud-init` embeds them).
#[derive(Debug, Clone, Default)]
pub struct Scripts {
    pub apply: Option<super::Script>,
    pub rollback: Option<String>,
}

impl Scripts {
    fn apply(&self, ctx: &Render<'_>) -> Result<Cow<'_, super::Script>, RenderError> {
        Ok(match &self.apply {
            Some(script) => Cow::Borrowed(script),
            None => Cow::Owned(super::apply_script(ctx)?),
        })
    }

    fn rollback(&self, ctx: &Render<'_>) -> Result<Cow<'_, str>, RenderError> {
        Ok(match &self.rollback {
            Some(text) => Cow::Borrowed(text),
            None => Cow::Owned(super::rollback_script(ctx)?),
        })
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
    /// The file could not be written.
    #[error("cannot write: {0}")]
    Write(#[from] std::io::Error),
}
