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

/// Names an interrupted transaction in the state directory (if it exists): `apply` will
/// undo it before anything else, so the plan shown is against a kernel that still holds it.
fn note_interrupted(state: Option<&Path>) {
    let path = super::live::state_path(state);
    if !path.is_dir() {
        return;
    }
    let dir = netqos::apply::state_dir::StateDir { path };
    if let Ok(Some(r)) = dir.interrupted()
        && dir.lock(false).is_ok()
    {
        eprintln!(
            "netqos: transaction {} ({}) was interrupted; `netqos apply` undoes it first, so \
             the changes below may be more than it will make",
            r.id, r.source
        );
    }
}

pub fn run(
    file: &Path,
    format: PlanFormat,
    opts: Options,
    state: Option<&Path>,
    vars: &VarArgs,
    ui: Ui,
) -> Exit {
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
    note_interrupted(state);
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
