//! The whole pipeline in one call: parse → check → lower → backends ([`compile`]), and its
//! two halves ([`check`], then [`Checked::conflist`] and [`Checked::files`]) for callers that act in between (the
//! CLI refuses an output directory with NQ037 once it knows the policy's CNI).
//!
//! Pure like every stage: the caller reads the policy, the variables, the templates and the
//! node's conflist, and writes the files.

use crate::backend::{
    Artefact, Body, CniInstall, OutFile, Render, RenderError, Scripts, Templates,
};
use crate::cni::{self, ConflistArtefacts, NodeConflist};
use crate::codes::Code;
use crate::diagnostic::{Diagnostic, Severity};
use crate::model::Model;
use crate::plan::Plan;
use crate::vars::ExternalVars;

/// Which artefacts to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every kind that applies: without a `pods` block, those that need one are left out.
    All,
    /// Exactly these, in this order: one that needs a `pods` block the policy lacks fails.
    Only(Vec<Artefact>),
}

impl Selection {
    /// The kinds chosen, in order.
    #[must_use]
    pub fn kinds(&self) -> &[Artefact] {
        match self {
            Selection::All => &Artefact::ALL,
            Selection::Only(k) => k,
        }
    }
}

/// What [`compile`] needs besides the policy text and its variables.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    /// The policy's name as the artefacts show it (its file name).
    pub name: &'a str,
    pub artefacts: Selection,
    pub templates: Templates,
    /// The node's conflist (`--conflist`); otherwise the `cni` flavour's default is used.
    pub conflist: Option<NodeConflist<'a>>,
    /// Accepted warning and info codes: neither reported nor counted.
    pub allow: &'a [Code],
    /// A warning fails the compile.
    pub deny_warnings: bool,
    /// Review artefacts show the kernel's form too (`compile -v`: the tree's u32 filters).
    pub verbose: bool,
}

/// A checked and lowered policy: the front half's result.
#[derive(Debug)]
pub struct Checked {
    pub model: Model,
    pub plan: Plan,
    /// Warnings and infos about the policy, sorted (allowed codes removed).
    pub warnings: Vec<Diagnostic>,
}

/// The conflist change for the policy's pod limits.
#[derive(Debug)]
pub struct Conflist {
    /// The `conflist` artefact's files and its summary for the operator.
    pub artefacts: ConflistArtefacts,
    /// What the scripts install and restore, when there is a change.
    pub install: Option<CniInstall>,
    /// Warnings about the node's conflist text (allowed codes removed).
    pub warnings: Vec<Diagnostic>,
}

/// Everything a compile produced.
#[derive(Debug)]
pub struct Artefacts {
    /// The files, in the order of the selection.
    pub files: Vec<OutFile>,
    /// Warnings and infos about the policy, sorted (allowed codes removed).
    pub warnings: Vec<Diagnostic>,
    /// The conflist change, when a chosen artefact carries it and the policy has pods.
    pub conflist: Option<Conflist>,
}

/// Why a compile produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy has errors, or warnings under `deny_warnings`: every diagnostic, sorted.
    #[error("the policy has errors")]
    Policy(Vec<Diagnostic>),
    /// The node's conflist cannot be patched: diagnostics about its text, one an error.
    #[error("the conflist cannot be patched")]
    Conflist(Vec<Diagnostic>),
    /// An artefact could not be rendered.
    #[error("{artefact}: {source}")]
    Render {
        artefact: Artefact,
        source: RenderError,
    },
}

/// Parses, checks, lowers and renders a policy: the whole pipeline.
pub fn compile(text: &str, vars: &ExternalVars, opts: &Options<'_>) -> Result<Artefacts, Error> {
    let checked = check(text, vars, opts.allow, opts.deny_warnings).map_err(Error::Policy)?;
    let conflist = checked.conflist(opts)?;
    Ok(Artefacts {
        files: checked.files(opts, conflist.as_ref())?,
        warnings: checked.warnings,
        conflist,
    })
}

/// Parses, checks and lowers a policy. Diagnostics with a code in `allow` are dropped; `Err`
/// holds every other diagnostic (sorted), at least one an error or, under `deny_warnings`, a
/// warning.
pub fn check(
    text: &str,
    vars: &ExternalVars,
    allow: &[Code],
    deny_warnings: bool,
) -> Result<Checked, Vec<Diagnostic>> {
    check_marked(text, vars, allow, deny_warnings, &mut |_| {})
}

/// [`check`], calling `mark` with the name of each stage when it is done (`parse`,
/// `check`, `lower`): how `NETQOS_TIMINGS` times them.
pub fn check_marked(
    text: &str,
    vars: &ExternalVars,
    allow: &[Code],
    deny_warnings: bool,
    mark: &mut dyn FnMut(&str),
) -> Result<Checked, Vec<Diagnostic>> {
    let (model, warnings) = check_unlowered(text, vars, allow, deny_warnings, mark)?;
    Ok(Checked::lower(model, warnings, mark))
}

/// [`check_marked`] up to the model: a caller done with the text (its warnings shown) can
/// free it before [`Checked::lower`]. `Ok` holds the model and the warnings.
pub fn check_unlowered(
    text: &str,
    vars: &ExternalVars,
    allow: &[Code],
    deny_warnings: bool,
    mark: &mut dyn FnMut(&str),
) -> Result<(Model, Vec<Diagnostic>), Vec<Diagnostic>> {
    let parsed = crate::syntax::parse(text);
    mark("parse");
    let checked = match parsed {
        Ok(file) => crate::check::check(file, text, vars),
        Err(d) => {
            let mut diagnostics = crate::diagnostic::Diagnostics::new();
            diagnostics.push(d);
            crate::check::Checked {
                model: None,
                diagnostics,
            }
        }
    };
    mark("check");
    let mut diags = checked.diagnostics.into_sorted();
    diags.retain(|d| !allow.contains(&d.code));
    let warned = diags.iter().any(|d| d.severity == Severity::Warning);
    match checked.model {
        Some(model) if !(deny_warnings && warned) => Ok((model, diags)),
        _ => Err(diags),
    }
}

impl Checked {
    /// Lowers a checked model (`warnings` about it, as [`check_unlowered`] gave them).
    pub fn lower(model: Model, warnings: Vec<Diagnostic>, mark: &mut dyn FnMut(&str)) -> Checked {
        let plan = crate::lower::lower(&model);
        mark("lower");
        Checked {
            plan,
            model,
            warnings,
        }
    }

    /// The conflist change, when the policy has a `pods` block and a chosen artefact
    /// carries the change.
    pub fn conflist(&self, opts: &Options<'_>) -> Result<Option<Conflist>, Error> {
        let Some(pods) = self.model.pods.as_ref().filter(|p| p.for_cni()) else {
            return Ok(None);
        };
        if !opts
            .artefacts
            .kinds()
            .iter()
            .any(|k| k.info().uses_conflist)
        {
            return Ok(None);
        }
        let artefacts =
            cni::conflist_artefacts(pods, opts.conflist.as_ref()).map_err(Error::Conflist)?;
        let mut warnings = opts.conflist.as_ref().map_or_else(Vec::new, |node| {
            cni::conflist::analyse(node.text, !pods.limits.is_empty()).1
        });
        warnings.retain(|d| !opts.allow.contains(&d.code));
        let install = artefacts.install.as_ref().map(|i| CniInstall {
            path: i.path.clone(),
            original: i.original.clone(),
            patched: i.patched.clone(),
            strict: i.from_node,
            plugin_dir: i.plugin_dir.clone(),
        });
        Ok(Some(Conflist {
            artefacts,
            install,
            warnings,
        }))
    }

    /// Renders the chosen artefacts with the conflist change `conflist`.
    pub fn files(
        &self,
        opts: &Options<'_>,
        conflist: Option<&Conflist>,
    ) -> Result<Vec<OutFile>, Error> {
        let mut files = InMemory(Vec::new());
        self.write_each(opts, conflist, &mut files)?;
        Ok(files.0)
    }

    /// Renders the chosen artefacts into `sink`, then commits them in the order of
    /// [`Checked::files`]. Rendering runs on two threads (the scripts and the artefacts
    /// that embed them on one, the others on the other, whichever is free taking the next),
    /// each file rendered straight into the writer the sink gives, so a caller that writes
    /// to disk holds none of the big ones whole. Nothing is committed unless every file
    /// rendered: a failing `--templates` template, a kind that needs a `pods` block or a
    /// failed write hands over nothing. The scripts are rendered once, also when
    /// `cloud-init` embeds them.
    pub fn write_each<S: FileSink>(
        &self,
        opts: &Options<'_>,
        conflist: Option<&Conflist>,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        let pods = self.model.pods.as_ref().filter(|p| p.for_cni());
        let ctx = Render {
            plan: &self.plan,
            source: opts.name,
            templates: &opts.templates,
            pods,
            conflist: conflist.map(|c| &c.artefacts),
            cni: conflist.and_then(|c| c.install.as_ref()),
            verbose: opts.verbose,
        };
        let mut kinds = Vec::new();
        for &artefact in opts.artefacts.kinds() {
            if pods.is_none() && artefact.info().needs_pods {
                if opts.artefacts == Selection::All {
                    continue;
                }
                return Err(render_failed(artefact, RenderError::NeedsPods(artefact)).into());
            }
            kinds.push(artefact);
        }
        let rendered = render_all(&ctx, &kinds, sink)?;
        for (artefact, files) in kinds.iter().zip(rendered) {
            for (path, pending) in files {
                sink.commit(*artefact, &path, pending)?;
            }
        }
        Ok(())
    }
}

/// The files of one artefact, rendered and not yet committed.
type Rendered<P> = Vec<(String, P)>;

/// The outcome of rendering the kind at an index of the selection.
type Done<S> = (
    usize,
    Result<Rendered<<S as FileSink>::Pending>, <S as FileSink>::Error>,
);

/// Renders every kind of `kinds` into `sink` on two threads: the calling one renders the
/// scripts and then the kinds that embed them, the other starts on the rest at once; each
/// takes the next of the rest when it is free. The files of each kind, in `kinds` order;
/// on failure the first error in that order (the scripts' first), every file dropped.
fn render_all<S: FileSink>(
    ctx: &Render<'_>,
    kinds: &[Artefact],
    sink: &S,
) -> Result<Vec<Rendered<S::Pending>>, S::Error> {
    let (tc, rollback) = (Artefact::Tc, Artefact::Rollback);
    let needs_scripts =
        |a: &Artefact| matches!(a, Artefact::Tc | Artefact::Rollback | Artefact::CloudInit);
    let wants = |k: &[Artefact]| kinds.iter().any(|a| k.contains(a));
    let rest: Vec<usize> = (0..kinds.len())
        .filter(|&i| !needs_scripts(&kinds[i]))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let one = |i: usize, scripts: &Scripts| (i, render_one(ctx, scripts, kinds[i], sink));
    let take_rest = |scripts: &Scripts, out: &mut Vec<Done<S>>| {
        loop {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(&i) = rest.get(n) else { break };
            out.push(one(i, scripts));
        }
    };
    let (scripts, mut done, theirs) = std::thread::scope(|s| {
        // No thread to be had (a task limit): this one takes all the rest.
        let other = std::thread::Builder::new()
            .spawn_scoped(s, || {
                let mut out = Vec::new();
                take_rest(&Scripts::default(), &mut out);
                out
            })
            .ok();
        let mut scripts = Scripts::default();
        let mut mine = Vec::new();
        let made = (|| {
            if wants(&[tc, Artefact::CloudInit]) {
                scripts.apply = Some(
                    crate::backend::apply_script(ctx).map_err(|e| render_failed(tc, e.into()))?,
                );
            }
            if wants(&[rollback, Artefact::CloudInit]) {
                scripts.rollback = Some(
                    crate::backend::rollback_script(ctx)
                        .map_err(|e| render_failed(rollback, e.into()))?,
                );
            }
            Ok::<(), Error>(())
        })();
        if made.is_ok() {
            for i in (0..kinds.len()).filter(|&i| needs_scripts(&kinds[i])) {
                mine.push(one(i, &scripts));
            }
            // The scripts' pieces are tens of megabytes for a big policy: not kept while
            // this thread helps with the rest.
            drop(scripts);
            take_rest(&Scripts::default(), &mut mine);
        } else {
            // Nothing more is started: what the other thread renders is dropped.
            next.store(rest.len(), std::sync::atomic::Ordering::Relaxed);
        }
        let theirs = other.map_or_else(Vec::new, |h| {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
        (made, mine, theirs)
    });
    scripts?;
    done.extend(theirs);
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Renders the files of one artefact into `sink`.
fn render_one<S: FileSink>(
    ctx: &Render<'_>,
    scripts: &Scripts,
    artefact: Artefact,
    sink: &S,
) -> Result<Rendered<S::Pending>, S::Error> {
    let mut files = Vec::new();
    let mut file = |path: &str, body: Body<'_>| {
        let pending = sink.render(artefact, path, body).map_err(Fail::Sink)?;
        files.push((path.to_string(), pending));
        Ok(())
    };
    artefact
        .write(ctx, scripts, &mut file)
        .map_err(|e| match e {
            Fail::Render(e) => render_failed(artefact, e).into(),
            Fail::Sink(e) => e,
        })?;
    Ok(files)
}

fn render_failed(artefact: Artefact, source: RenderError) -> Error {
    Error::Render { artefact, source }
}

/// Where [`Checked::write_each`] puts the files: each is rendered (from any of the
/// rendering threads) into something not yet visible, then all are committed in order.
pub trait FileSink: Sync {
    /// A rendered file, not yet in place.
    type Pending: Send;
    type Error: From<Error> + Send;
    /// Renders one file of `artefact` at `path` (relative to the output directory): `body`
    /// writes its contents into the writer it is given; its error is the sink's to report
    /// (`Error::Render` for the artefact, or the sink's own when the writer failed).
    fn render(
        &self,
        artefact: Artefact,
        path: &str,
        body: Body<'_>,
    ) -> Result<Self::Pending, Self::Error>;
    /// Puts a rendered file in place; called in order, once every file rendered.
    fn commit(
        &mut self,
        artefact: Artefact,
        path: &str,
        pending: Self::Pending,
    ) -> Result<(), Self::Error>;
}

/// A sink collecting the files in memory.
struct InMemory(Vec<OutFile>);

impl FileSink for InMemory {
    type Pending = String;
    type Error = Error;
    fn render(&self, artefact: Artefact, _: &str, body: Body<'_>) -> Result<String, Error> {
        let mut text = Vec::new();
        body(&mut text).map_err(|source| render_failed(artefact, source))?;
        Ok(String::from_utf8(text)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }
    fn commit(&mut self, artefact: Artefact, path: &str, text: String) -> Result<(), Error> {
        self.0.push(OutFile::new(artefact, path, text));
        Ok(())
    }
}

/// Why writing an artefact stopped: its rendering, or the sink.
enum Fail<E> {
    Render(RenderError),
    Sink(E),
}

impl<E> From<RenderError> for Fail<E> {
    fn from(e: RenderError) -> Self {
        Fail::Render(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = include_str!("../examples/pods.nq");

    fn opts(artefacts: Selection) -> Options<'static> {
        Options {
            name: "pods.nq",
            artefacts,
            templates: Templates::default(),
            conflist: None,
            allow: &[],
            deny_warnings: false,
            verbose: false,
        }
    }

    #[test]
    fn compile_is_the_stages_chained() {
        let vars = ExternalVars::default();
        let all = compile(POLICY, &vars, &opts(Selection::All)).unwrap();
        let checked = check(POLICY, &vars, &[], false).unwrap();
        let t = Templates::default();
        let ctx = Render::new(&checked.plan, "pods.nq", &t);
        let plan = all.files.iter().find(|f| f.artefact == Artefact::Plan);
        assert_eq!(plan.unwrap().text, crate::backend::plan_json(&checked.plan));
        let tree = all.files.iter().find(|f| f.path == "tree.txt");
        assert_eq!(tree.unwrap().text, crate::backend::tree(ctx.plan, false));
        let kinds: Vec<Artefact> = all.files.iter().map(|f| f.artefact).collect();
        assert!(kinds.windows(2).all(|w| w[0] <= w[1]), "{kinds:?}");
        assert!(kinds.contains(&Artefact::Annotations));
    }

    #[test]
    fn an_artefact_that_needs_pods_is_left_out_or_refused() {
        let vars = ExternalVars::default();
        let src = include_str!("../examples/ingress.nq");
        let all = compile(src, &vars, &opts(Selection::All)).unwrap();
        assert!(all.files.iter().all(|f| !f.artefact.info().needs_pods));
        assert!(all.conflist.is_none());
        let only = compile(
            src,
            &vars,
            &opts(Selection::Only(vec![Artefact::Annotations])),
        );
        assert!(matches!(
            only,
            Err(Error::Render {
                artefact: Artefact::Annotations,
                source: RenderError::NeedsPods(_)
            })
        ));
        let bad = compile("netqos 1\nbogus\n", &vars, &opts(Selection::All));
        assert!(matches!(bad, Err(Error::Policy(d)) if d.iter().any(Diagnostic::is_error)));
    }

    #[test]
    fn names_and_files_are_distinct() {
        let mut names: Vec<&str> = Artefact::ALL.iter().map(|a| a.name()).collect();
        let mut files: Vec<&str> = Artefact::ALL.iter().map(|a| a.info().file_name).collect();
        names.dedup();
        files.sort_unstable();
        files.dedup();
        assert_eq!((names.len(), files.len()), (10, 10));
        for a in Artefact::ALL {
            let parsed = <Artefact as clap::ValueEnum>::from_str(a.name(), false);
            assert_eq!(parsed, Ok(a));
            assert!(!a.description().is_empty());
        }
    }
}
