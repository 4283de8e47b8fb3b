//! Parsing: policy text → syntax tree with spans (`parse`), and the comments `fmt` keeps.

pub mod ast;
mod comments;
mod parse;

pub use comments::{Comment, comments};
pub use parse::parse;
