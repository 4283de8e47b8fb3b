//! Integration tests: one binary (links are slow on small machines).

// Test code: a panic is a failed test (the crate's lints keep unwrap/expect out of src/).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod agent;
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
mod deploy;
mod diff;
mod docs;
mod doctor;
mod examples;
mod explain;
mod fuzz;
mod harness;
mod image;
mod kernel;
mod make;
mod man;
mod netlink_golden;
mod node;
mod overlay;
mod package;
mod parse_diff;
mod review_kit;
mod scale;
mod shape;
mod state_wal;
mod traffic;
mod u32hash;
