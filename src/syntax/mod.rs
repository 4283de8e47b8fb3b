//! Parsing: policy text → syntax tree with spans (`parse`), and the comments `fmt` keeps.
//!
//! [`parse`] is the hand-written reader (`reader`, with `track` reproducing pest's error
//! position and expected set, `error` the NQ040 both report); [`reference::parse`] is the
//! normative grammar `grammar/netqos.pest` run by pest, kept as the oracle the reader is
//! proved against (`tests/parse_diff.rs`, `fuzz/fuzz_targets/parse_diff.rs`).

pub mod ast;
mod comments;
mod error;
mod reader;
pub mod reference;
mod track;

pub use comments::{Comment, comments};
pub use reader::{MAX_DEPTH, parse};
