// What every fuzz input must satisfy, as plain functions returning what broke: shared by
// the libFuzzer targets (`fuzz/fuzz_targets/`) and the in-suite fuzz cases
// (`tests/fuzz.rs` includes this file), so a crash found at scale is replayed by the suite
// with the same checks. No diagnostic rendering here: diagnostics are checked by code and
// span only, which keeps the hot loop fast.
//
// (Outer comments only: `include!` cannot take a file with inner attributes.)

use netqos::backend::Templates;
use netqos::cni::NodeConflist;
use netqos::cni::conflist::{Outcome, analyse};
use netqos::cni::json_patch::apply;
use netqos::diagnostic::Diagnostic;
use netqos::model::Pods;
use netqos::pipeline::{Options, Selection, compile};
use netqos::vars::ExternalVars;

/// A policy: parse, check, lower, every artefact, the netlink target and fmt.
///
/// * every diagnostic's spans lie within the input, on character boundaries;
/// * checking the same text twice gives the same diagnostics and model (determinism);
/// * a policy that checks without errors compiles (all artefacts), twice the same;
/// * fmt output formats to itself and keeps whether the policy is valid.
pub fn policy(text: &str) -> Result<(), String> {
    policy_with(text, Selection::All)
}

/// [`policy`] rendering only the artefacts that need no template engine (plan, tree, svg,
/// and with a `pods` block conflist and annotations): the `policy_core` target, about
/// thirty times faster, spends its time in parse, check, lower and fmt.
pub fn policy_core(text: &str) -> Result<(), String> {
    use netqos::Artefact::{Annotations, Conflist, Plan, Svg, Tree};
    policy_with(text, Selection::Only(vec![Plan, Tree, Svg, Conflist, Annotations]))
}

fn policy_with(text: &str, artefacts: Selection) -> Result<(), String> {
    let vars = ExternalVars::default();
    let first = netqos::check_source(text, &vars);
    let model = first.model.clone();
    let diags = first.diagnostics.into_sorted();
    spans_within(&diags, text, "policy")?;
    let again = netqos::check_source(text, &vars);
    if again.model != model || again.diagnostics.into_sorted() != diags {
        return Err("checking the same text twice differs".into());
    }
    let clean = !diags.iter().any(Diagnostic::is_error);
    if model.is_some() != clean {
        return Err(format!("model is {} but errors are {}", model.is_some(), !clean));
    }
    if let Some(m) = model.as_ref().filter(|_| clean) {
        compiles(text, &vars, artefacts, m.pods.as_ref().is_some_and(Pods::for_cni))?;
    }
    formats(text, &vars, model.is_some())
}

/// A check-clean policy compiles every artefact, deterministically, and lowers to a netlink
/// target without panicking (a target error is an answer, not a failure).
fn compiles(
    text: &str,
    vars: &ExternalVars,
    artefacts: Selection,
    pods: bool,
) -> Result<(), String> {
    let artefacts = match artefacts {
        // Those that need a `pods` block only when there is one, as `All` does.
        Selection::Only(k) => {
            Selection::Only(k.into_iter().filter(|a| pods || !a.info().needs_pods).collect())
        }
        all => all,
    };
    let opts = Options {
        name: "fuzz.nq",
        artefacts,
        templates: Templates::default(),
        conflist: None,
        allow: &[],
        deny_warnings: false,
        verbose: true,
    };
    let files = |r: Result<Vec<netqos::backend::OutFile>, netqos::pipeline::Error>| {
        r.map(|f| f.into_iter().map(|f| (f.path, f.text)).collect::<Vec<_>>())
            .map_err(|e| format!("check-clean policy does not compile: {e} ({e:?})"))
    };
    // `compile`'s two halves, so the plan checked here also feeds the netlink target.
    let checked = netqos::pipeline::check(text, vars, &[], false)
        .map_err(|d| format!("check-clean policy fails pipeline::check: {d:?}"))?;
    let one = files(
        checked
            .conflist(&opts)
            .and_then(|c| checked.files(&opts, c.as_ref())),
    )?;
    if one.is_empty() {
        return Err("compile produced no files".into());
    }
    // Rendering dominates the cost of an input: the second compile, for determinism, runs
    // on one input in eight (picked by the input's hash, so a replay does the same).
    if (sample(text).is_multiple_of(8) || cfg!(test))
        && files(compile(text, vars, &opts).map(|a| a.files))? != one
    {
        return Err("compiling the same text twice differs".into());
    }
    let _ = netqos::apply::state::from_plan(&checked.plan);
    Ok(())
}

/// FNV-1a of the text: a stable pick of inputs for the costlier checks.
fn sample(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// fmt is idempotent and does not change whether the policy is valid.
fn formats(text: &str, vars: &ExternalVars, valid: bool) -> Result<(), String> {
    let Ok(formatted) = netqos::format::format(text) else {
        return Ok(());
    };
    let again = netqos::format::format(&formatted)
        .map_err(|_| "formatted output does not format".to_string())?;
    if again != formatted {
        return Err(format!("fmt is not idempotent:\n{formatted}\n---\n{again}"));
    }
    if netqos::check_source(&formatted, vars).model.is_some() != valid {
        return Err("fmt changed whether the policy is valid".into());
    }
    Ok(())
}

/// Every label of every diagnostic is a range of `text` on character boundaries.
pub fn spans_within(diags: &[Diagnostic], text: &str, what: &str) -> Result<(), String> {
    for d in diags {
        for l in &d.labels {
            let s = l.span;
            if s.start > s.end || text.get(s.start..s.end).is_none() {
                return Err(format!(
                    "{what}: {:?} span {}..{} outside the {}-byte input",
                    d.code,
                    s.start,
                    s.end,
                    text.len()
                ));
            }
        }
    }
    Ok(())
}

/// A conflist: the analysis, then the artefacts for a policy's pods block from it.
///
/// * diagnostics' spans lie within the conflist text; analysing twice gives the same;
/// * a patch, the patched text and the reverse agree; the patch does not apply twice; the
///   patched text is recognised as done;
/// * without an outcome there is a diagnostic saying why.
pub fn conflist(text: &str, has_limits: bool, pods: Option<&Pods>) -> Result<(), String> {
    let (outcome, diags) = analyse(text, has_limits);
    spans_within(&diags, text, "conflist")?;
    if analyse(text, has_limits) != (outcome.clone(), diags.clone()) {
        return Err("analysing the same conflist twice differs".into());
    }
    // No outcome comes with a reason. (Not always an error: static rates in the bandwidth
    // entry are only a warning, NQ035, when the policy sets no pod limits.)
    if outcome.is_none() && diags.is_empty() {
        return Err("no outcome and no diagnostic".into());
    }
    if let Some(Outcome::Patch(p)) = &outcome {
        patch_agrees(text, p, has_limits)?;
    }
    if let Some(pods) = pods {
        artefacts_agree(text, pods)?;
    }
    Ok(())
}

/// The conflist artefacts of `pods` for the node's `text`: a refusal holds an error, with
/// spans within the text; an install starts from the text, and once it is installed there is
/// nothing more to install.
fn artefacts_agree(text: &str, pods: &Pods) -> Result<(), String> {
    let node = |text| NodeConflist {
        path: "/etc/cni/net.d/10-fuzz.conflist",
        text,
    };
    let install = match netqos::cni::conflist_artefacts(pods, Some(&node(text))) {
        Err(diags) => {
            spans_within(&diags, text, "conflist artefacts")?;
            if !diags.iter().any(Diagnostic::is_error) {
                return Err("conflist artefacts refused without an error".into());
            }
            return Ok(());
        }
        Ok(a) => a.install,
    };
    let Some(install) = install else {
        return Ok(());
    };
    if install.original != text {
        return Err("the install does not start from the node's conflist".into());
    }
    match netqos::cni::conflist_artefacts(pods, Some(&node(&install.patched))) {
        Ok(again) if again.install.is_none() => Ok(()),
        Ok(_) => Err("the installed conflist is patched again".into()),
        Err(diags) => Err(format!(
            "the installed conflist is refused: {:?}",
            diags.iter().map(|d| d.code).collect::<Vec<_>>()
        )),
    }
}

/// The `pods` blocks the conflist target computes artefacts for, picked by bits 2 and 3 of
/// its mode byte: examples/pods.nq's (limits), a CNI alone, a burst without limits, limits
/// and a burst. [`pods_policy`] makes each a whole policy.
pub const PODS_BLOCKS: [&str; 4] = [
    "cni rke2-flannel\n    cidr 10.42.0.0/16\n    limit app=backup egress 50mbit\n    limit namespace=batch ingress 20mbit egress 20mbit",
    "cni rke2-flannel",
    "cni rke2-flannel\n    burst 20ms",
    "cni rke2-flannel\n    limit app=web egress 50mbit\n    burst 20ms",
];

/// A check-clean policy around `PODS_BLOCKS[mode >> 2 & 3]`.
#[must_use]
pub fn pods_policy(mode: u8) -> String {
    let block = PODS_BLOCKS[usize::from(mode >> 2 & 3)];
    format!(
        "netqos 1\n\ninterface eth0 {{\n    rate 1gbit\n    class all {{\n        rate 1gbit\n        default\n    }}\n}}\n\npods {{\n    {block}\n}}\n"
    )
}

fn patch_agrees(
    text: &str,
    p: &netqos::cni::conflist::Patch,
    has_limits: bool,
) -> Result<(), String> {
    let original: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("patched invalid JSON: {e}"))?;
    let once = apply(&original, &p.ops).map_err(|e| format!("patch fails: {e}"))?;
    let from_text: serde_json::Value = serde_json::from_str(&p.patched_text)
        .map_err(|e| format!("patched text is not JSON: {e}"))?;
    if once != from_text {
        return Err("patch and patched text disagree".into());
    }
    if apply(&once, &p.ops).is_ok() {
        return Err("patch applies twice".into());
    }
    let back = apply(&once, &p.reverse).map_err(|e| format!("reverse fails: {e}"))?;
    if back != original {
        return Err("reverse does not restore".into());
    }
    if !matches!(
        analyse(&p.patched_text, has_limits).0,
        Some(Outcome::Present { .. })
    ) {
        return Err("patched text is not recognised as done".into());
    }
    Ok(())
}

/// The hand-written reader against the pest oracle (`netqos::syntax::reference`, the
/// normative grammar): the same tree with the same spans, or the same NQ040. Nesting is the
/// one allowed difference: the reader stops at `MAX_DEPTH` braces (and may only say so when
/// the input has that many), pest where its thread's stack ends.
pub fn parse_diff(text: &str) -> Result<(), String> {
    use netqos::syntax::{self, MAX_DEPTH, reference};
    let deep = |r: &Result<netqos::syntax::ast::File, Diagnostic>| {
        matches!(r, Err(d) if d.message.contains("too deeply"))
    };
    let fast = syntax::parse(text);
    if deep(&fast) {
        return if text.matches('{').count() > MAX_DEPTH {
            Ok(())
        } else {
            Err(format!("the reader gave up on nesting: {fast:?}"))
        };
    }
    let slow = reference::parse(text);
    if deep(&slow) || fast == slow {
        return Ok(());
    }
    Err(format!(
        "the reader and the grammar disagree\nreader:  {fast:?}\ngrammar: {slow:?}"
    ))
}
