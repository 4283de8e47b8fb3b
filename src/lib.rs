//! netqos: a compiler for node bandwidth policy.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! text ─syntax::parse─▶ ast::File ─check::check─▶ model::Model
//! ```

pub mod agent;
pub mod apply;
pub mod backend;
pub mod check;
pub mod cni;
pub mod codes;
pub mod diagnostic;
pub mod diff;
pub mod format;
pub mod lower;
pub mod model;
pub mod plan;
pub mod report;
pub mod span;
pub mod syntax;
pub mod units;
pub mod vars;

use diagnostic::Diagnostics;

/// Parses and checks a policy text: the front half of the pipeline.
pub fn check_source(src: &str, vars: &vars::ExternalVars) -> check::Checked {
    match syntax::parse(src) {
        Ok(file) => check::check(&file, src, vars),
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
