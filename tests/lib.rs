//! Integration tests: one binary (links are slow on small machines).

mod support;

mod ansible;
mod apply;
mod apply_kernel;
mod check_fixtures;
mod cli;
mod cni;
mod cni_plugin;
mod cni_run;
mod compile;
mod completions;
mod cri;
mod diff;
mod docs;
mod doctor;
mod examples;
mod explain;
mod fuzz;
mod harness;
mod kernel;
mod make;
mod man;
mod netlink_golden;
mod node;
mod scale;
mod traffic;
