//! `netqos plan FILE`: what `apply` would change on this host, changing nothing.

use std::path::Path;

use super::live::{changes_json, load_target, open_kernel, print_changes, read_live};
use super::{Exit, Ui, VarArgs};
use netqos::apply::diff::{self, Options};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    Human,
    Json,
}

pub fn run(file: &Path, format: PlanFormat, opts: Options, vars: &VarArgs, ui: Ui) -> Exit {
    let (target, name) = match load_target(file, vars, ui) {
        Ok(l) => (l.target, l.name),
        Err(e) => return e,
    };
    let mut kernel = match open_kernel(Some(&target)) {
        Ok(k) => k,
        Err(e) => return e,
    };
    let live = match read_live(&mut kernel, &target) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let changes = match diff::diff(&live, &target, opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netqos: {e}");
            return e.exit();
        }
    };
    match format {
        PlanFormat::Json => outln!("{}", changes_json(&changes)),
        PlanFormat::Human if changes.is_empty() => {
            outln!("{name}: nothing to change; the kernel already matches the policy")
        }
        PlanFormat::Human => {
            outln!("{name}: {} change(s), in this order:", changes.len());
            print_changes(&changes);
        }
    }
    Exit::Ok
}
