//! netqos: a compiler for node bandwidth policy.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! text ─syntax::parse─▶ ast::File ─check::check─▶ model::Model
//! ```

pub mod codes;
pub mod diagnostic;
pub mod span;
pub mod syntax;
