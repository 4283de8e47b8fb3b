//! netqos: a compiler for node bandwidth policy.
//!
//! The pipeline, one module per stage; [`compile`] runs it from text to artefacts, and the
//! live commands take the plan on to the kernel:
//!
//! ```text
//! text ─syntax::parse─▶ ast::File ─check::check─▶ model::Model ─lower::lower─▶ plan::Plan
//!   ─backend (Artefact::render)─▶ files: tc, rollback, plan, tree, cloud-init, systemd,
//!                                        conflist, annotations
//!   ─apply::state::from_plan─▶ Target ─apply::diff─▶ [Change] ─apply::txn─▶ the kernel
//! ```
//!
//! * parse: [`syntax::parse`] (NQ040); check: [`check::check`] (every other code), both in
//!   [`check_source`]; [`pipeline::check`] adds lowering and the `--allow` and
//!   `--deny-warnings` rules.
//! * lower: [`lower::lower`], infallible.
//! * backends: [`backend::Artefact`] names each artefact kind and renders it from one
//!   [`backend::Render`] context; [`pipeline::Checked::files`] renders a selection.
//! * apply: [`apply::state::from_plan`] turns the plan into kernel objects,
//!   [`apply::diff::diff`] plans the changes against what [`apply::kernel::Kernel`] reads,
//!   [`apply::txn`] executes them journaled and undoes them on failure.
//!
//! The rest of this page is the project's `ARCHITECTURE.md`.
//!
#![doc = include_str!("../ARCHITECTURE.md")]

pub mod agent;
pub mod apply;
pub mod backend;
pub mod check;
pub mod cni;
pub mod codes;
pub mod diagnostic;
pub mod diff;
pub mod doctor;
pub mod exit;
pub mod format;
pub mod input;
pub mod lower;
pub mod model;
pub mod parallel;
pub mod pipeline;
pub mod plan;
pub mod plugin;
pub mod report;
pub mod span;
pub mod syntax;
#[cfg(test)]
mod testing;
pub mod units;
pub mod vars;

pub use backend::Artefact;
pub use pipeline::compile;

use diagnostic::Diagnostics;

/// Parses and checks a policy text: the front half of the pipeline.
#[must_use]
pub fn check_source(src: &str, vars: &vars::ExternalVars) -> check::Checked {
    match syntax::parse(src) {
        Ok(file) => check::check(file, src, vars),
        Err(d) => {
            let mut diagnostics = Diagnostics::new();
            diagnostics.push(d);
            check::Checked {
                model: None,
                diagnostics,
            }
        }
    }
}
