//! Integration tests: one binary (links are slow on small machines).

mod support;

mod apply;
mod apply_kernel;
mod check_fixtures;
mod cli;
mod compile;
mod examples;
mod explain;
mod fuzz;
mod kernel;
mod man;
mod netlink_golden;
mod scale;
mod traffic;
