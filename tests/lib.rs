//! Integration tests: one binary (links are slow on small machines).

mod support;

mod check_fixtures;
mod cli;
mod cni;
mod cni_run;
mod compile;
mod examples;
mod explain;
mod fuzz;
mod kernel;
mod man;
mod scale;
mod traffic;
