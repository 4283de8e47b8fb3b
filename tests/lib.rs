//! Integration tests: one binary (links are slow on small machines).

mod support;

mod check_fixtures;
mod cli;
mod examples;
mod explain;
mod fuzz;
mod scale;
