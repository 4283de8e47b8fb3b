//! Helpers of the live commands (plan, apply, rollback, confirm, status): loading a
//! policy's target, the state directory, opening the kernel, printing changes.

use std::path::{Path, PathBuf};

use super::check::{external_vars, print, read_source};
use super::{Exit, Format, Ui, VarArgs};
use netqos::apply::kernel::{Kernel, NetlinkKernel};
use netqos::apply::model::Change;
use netqos::apply::state::{self, Live, Target};
use netqos::apply::state_dir::StateDir;

/// `--state-dir`, else `NETQOS_STATE_DIR`, else `/var/lib/netqos`.
pub fn state_path(arg: Option<&Path>) -> PathBuf {
    arg.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::var_os("NETQOS_STATE_DIR")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("/var/lib/netqos"), PathBuf::from)
    })
}

/// The state directory (created when missing).
pub fn state_dir(arg: Option<&Path>) -> Result<StateDir, Exit> {
    let path = state_path(arg);
    StateDir::open(&path).map_err(|e| {
        eprintln!("netqos: {e}");
        e.exit()
    })
}

/// Takes the state directory's lock (`wait`: block until it is free), or says why not,
/// for a command that changes it (apply, rollback, confirm, the revert), and folds the transaction log of an agent's scoped applies into
/// the per-transaction files those commands read and write (`apply::state_wal`).
pub fn lock(dir: &StateDir, wait: bool) -> Result<netqos::apply::state_dir::Lock, Exit> {
    let report = |e: netqos::apply::state_dir::StateError| {
        eprintln!("netqos: {e}");
        e.exit()
    };
    let lock = dir.lock(wait).map_err(report)?;
    dir.fold().map_err(report)?;
    Ok(lock)
}

/// A checked policy, lowered for the live commands.
pub struct Loaded {
    pub target: Target,
    /// The policy file's name, for messages.
    pub name: String,
    /// The policy's `pods` block, if any (apply installs its conflist change).
    pub pods: Option<netqos::model::Pods>,
    /// netqos's nftables table as the policy wants it.
    pub nft: netqos::apply::nft_table::NftTable,
    /// The policy's classes by name (`classes.json`, for `status` and `top`).
    pub classes: Vec<netqos::agent::metrics::ClassInfo>,
}

/// Checks and lowers a policy into its target state (one parse and check: at 10,000
/// classes that is a fifth of a second, worth not doing twice).
pub fn load_target(file: &Path, vars: &VarArgs, ui: Ui) -> Result<Loaded, Exit> {
    let mut json = Vec::new();
    let vars = match external_vars(vars) {
        Ok(v) => v,
        Err((diags, exit)) => {
            let src = netqos::report::Source {
                name: "<command line>".into(),
                text: String::new(),
            };
            print(&diags, &src, Format::Human, ui, &mut json);
            return Err(exit);
        }
    };
    let src = read_source(file).map_err(|e| e.report(ui))?;
    let checked = match netqos::pipeline::check(&src.text, &vars, &[], false) {
        Ok(c) => c,
        Err(diags) => {
            print(&diags, &src, Format::Human, ui, &mut json);
            eprintln!("netqos: {} has errors: nothing applied", src.name);
            return Err(Exit::Invalid);
        }
    };
    print(&checked.warnings, &src, Format::Human, ui, &mut json);
    // Root rates against the links' speeds on this node (NQ100): a warning, never a refusal.
    let link = netqos::doctor::links::rate_findings(
        &checked.model,
        &src.text,
        &netqos::doctor::links::sysfs_speed,
    );
    print(&link, &src, Format::Human, ui, &mut json);
    // The policy is valid; what fails here is a limit of the netlink apply (exit 3).
    let target = state::from_plan(&checked.plan).map_err(|e| {
        eprintln!("netqos: {e}");
        Exit::Io
    })?;
    Ok(Loaded {
        target,
        name: src.name,
        pods: checked.model.pods.filter(netqos::model::Pods::for_cni),
        nft: netqos::apply::nft_table::NftTable::for_plan(checked.plan.pod_rules.as_ref()),
        classes: netqos::agent::metrics::classes_of(&checked.plan),
    })
}

/// Opens rtnetlink, hinting the filter priorities of `target`.
pub fn open_kernel(target: Option<&Target>) -> Result<NetlinkKernel, Exit> {
    let mut k = NetlinkKernel::open().map_err(|e| {
        eprintln!("netqos: {e} (apply needs CAP_NET_ADMIN: run as root)");
        Exit::Io
    })?;
    if let Some(t) = target {
        for tree in &t.trees {
            for f in &tree.filters {
                if !k.prio_hints.contains(&f.prio) {
                    k.prio_hints.push(f.prio);
                }
            }
        }
    }
    Ok(k)
}

/// Reads the devices of `target`; a device the policy names that does not exist (other
/// than an IFB netqos creates) is an error.
pub fn read_live(kernel: &mut dyn Kernel, target: &Target) -> Result<Live, Exit> {
    netqos::apply::transaction::read_target(kernel, target).map_err(|e| {
        eprintln!("netqos: {e}");
        e.exit()
    })
}

/// Reads netqos's nftables table and works out its change; with pod rules, the kernel
/// checks them first (`nft -c`). Nothing changes here.
pub fn nft_change(
    table: &netqos::apply::nft_table::NftTable,
) -> Result<(Option<String>, Option<netqos::apply::nft_table::NftChange>), Exit> {
    let live = table.read().map_err(|e| {
        eprintln!("netqos: {e}; nothing changed");
        Exit::Io
    })?;
    let change = table.change(&live);
    if change == Some(netqos::apply::nft_table::NftChange::Install) {
        table.check().map_err(|e| {
            eprintln!("netqos: {e}; nothing changed");
            Exit::Io
        })?;
    }
    Ok((live, change))
}

/// Prints changes for people, one per line.
pub fn print_changes(changes: &[Change]) {
    for c in changes {
        outln!("  {}", c.describe());
    }
}

/// Changes as JSON: `{"changes": [{"op": …, "text": …}, …]}`.
pub fn changes_json(changes: &[Change]) -> String {
    let items: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| {
            let mut v = serde_json::to_value(c).unwrap_or(serde_json::Value::Null);
            if let serde_json::Value::Object(m) = &mut v {
                m.insert("text".into(), serde_json::Value::String(c.describe()));
            }
            v
        })
        .collect();
    let doc = serde_json::json!({ "changes": items, "count": changes.len() });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}
