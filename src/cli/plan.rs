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
    let (target, name, table) = match load_target(file, vars, ui) {
        Ok(l) => (l.target, l.name, l.nft),
        Err(e) => return e,
    };
    let nft = match super::live::nft_change(&table) {
        Ok((_, c)) => c.map(|c| c.describe(&table.table)),
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
            return Exit::Io;
        }
    };
    match format {
        PlanFormat::Json => {
            let mut doc: serde_json::Value =
                serde_json::from_str(&changes_json(&changes)).unwrap_or_default();
            doc["nftables"] = nft
                .clone()
                .map_or(serde_json::Value::Null, serde_json::Value::String);
            outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default())
        }
        PlanFormat::Human if changes.is_empty() && nft.is_none() => {
            outln!("{name}: nothing to change; the kernel already matches the policy")
        }
        PlanFormat::Human => {
            let n = changes.len() + usize::from(nft.is_some());
            outln!("{name}: {n} change(s), in this order:");
            print_changes(&changes);
            if let Some(line) = &nft {
                outln!("  {line}");
            }
        }
    }
    Exit::Ok
}
