//! `netqos apply FILE`: changes the kernel in place to match the policy, under the lock,
//! after recording a snapshot; undoes everything on the first failure (exit 4, or 5 if
//! the undo fails too). With `--confirm DURATION` a detached process reverts unless
//! `netqos confirm` arrives in time.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::live::{
    load_target, lock, nft_change, open_kernel, print_changes, read_live, state_dir,
};
use super::{Exit, Ui, VarArgs};
use netqos::apply::diff::{self, Options};
use netqos::apply::kernel::Kernel;
use netqos::apply::nft_table::{self, NftRecord, NftTable};
use netqos::apply::state;
use netqos::apply::txn::{self, Hooks, Pending, Record, StateDir};

pub struct Args<'a> {
    pub file: &'a Path,
    pub confirm: Option<Duration>,
    /// New connections that must succeed once the kernel holds the policy.
    pub probes: &'a [netqos::apply::probe::Probe],
    pub probe_timeout: Duration,
    pub opts: Options,
    pub state_dir: Option<&'a Path>,
    /// Overrides the flavour's conflist path.
    pub conflist: Option<&'a Path>,
    pub vars: &'a VarArgs,
}

/// The conflist change of the policy's `pods` block, worked out against the node's file
/// before anything changes. `Err` is the exit status (diagnostics printed).
fn prepare_conflist(
    a: &Args<'_>,
    pods: Option<&netqos::model::Pods>,
    ui: Ui,
) -> Result<Option<(std::path::PathBuf, String, String)>, Exit> {
    use netqos::apply::conflist_file::{self, PrepareError, Prepared};
    let Some(pods) = pods else {
        return Ok(None);
    };
    let Some(path) = conflist_file::path_for(pods, a.conflist) else {
        return Ok(None);
    };
    match conflist_file::prepare(pods, &path) {
        Ok(Prepared::Nothing(why)) => {
            if !ui.quiet {
                eprintln!("conflist: {why}");
            }
            Ok(None)
        }
        Ok(Prepared::Install {
            path,
            original,
            patched,
        }) => Ok(Some((path, original, patched))),
        Err(PrepareError::Invalid {
            path,
            text,
            diagnostics,
        }) => {
            let src = netqos::report::Source {
                name: path.display().to_string(),
                text,
            };
            super::check::print(
                &diagnostics,
                &src,
                super::Format::Human,
                ui,
                &mut Vec::new(),
            );
            eprintln!(
                "netqos: {} cannot be patched: nothing applied",
                path.display()
            );
            Err(Exit::Invalid)
        }
        Err(PrepareError::Io(path, e)) => {
            eprintln!(
                "netqos: cannot read {}: {e}; nothing applied",
                path.display()
            );
            Err(Exit::Io)
        }
    }
}

/// Parses `120s`, `2m`, `90` (seconds), `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1),
        Some((i, _)) => (
            &s[..i],
            match &s[i..] {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                u => return Err(format!("unknown unit `{u}` in `{s}`: use s, m or h (120s)")),
            },
        ),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 120s"))?;
    if n == 0 {
        return Err("a confirm window of 0 would revert at once; use at least 1s".into());
    }
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

pub fn run(a: &Args<'_>, ui: Ui) -> Exit {
    let mut timings = super::timings::Timings::from_env();
    let (target, name, pods, table) = match load_target(a.file, a.vars, ui) {
        Ok(l) => (l.target, l.name, l.pods, l.nft),
        Err(e) => return e,
    };
    timings.mark("check");
    let conflist = match prepare_conflist(a, pods.as_ref(), ui) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let dir = match state_dir(a.state_dir) {
        Ok(d) => d,
        Err(e) => return e,
    };
    let _lock = match lock(&dir, false) {
        Ok(l) => l,
        Err(e) => return e,
    };
    match dir.pending() {
        Ok(None) => {}
        Ok(Some(p)) => {
            eprintln!(
                "netqos: apply {} awaits confirmation; run `netqos confirm` to keep it or \
                 `netqos rollback` to undo it first",
                p.id
            );
            return Exit::Io;
        }
        Err(e) => {
            eprintln!("netqos: {e}");
            return Exit::Io;
        }
    }
    // Devices the last applied policy shaped and this one does not: remove netqos's tree,
    // redirect and IFB there too.
    let previous_applied = dir.applied().ok().flatten();
    let target = match &previous_applied {
        Some(prev) => state::with_removals(target, prev),
        None => target,
    };
    let mut kernel = match open_kernel(Some(&target)) {
        Ok(k) => k,
        Err(e) => return e,
    };
    let started = Instant::now();
    let live = match read_live(&mut kernel, &target) {
        Ok(l) => l,
        Err(e) => return e,
    };
    if a.confirm.is_none() && a.probes.is_empty() && !ui.quiet {
        warn_default_route(&mut kernel, &target.devices());
    }
    let (nft_live, nft) = match nft_change(&table) {
        Ok(c) => c,
        Err(e) => return e,
    };
    timings.mark("read");
    let changes = match diff::diff(&live, &target, a.opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netqos: {e}");
            return Exit::Io;
        }
    };
    if changes.is_empty() && conflist.is_none() && nft.is_none() {
        if let Err(e) = nft_table::set_applied(&dir.path, table.want.as_deref()) {
            eprintln!("netqos: {e}");
            return Exit::Io;
        }
        if let Err(e) = dir.set_applied(Some(&target)) {
            eprintln!("netqos: {e}");
            return Exit::Io;
        }
        if !ui.quiet {
            outln!("{name}: nothing to change; the kernel already matches the policy");
        }
        return Exit::Ok;
    }
    let mut record = Record {
        id: txn::new_id(),
        created: txn::now(),
        source: name.clone(),
        target: target.clone(),
        snapshot: live,
        outcome: "applying".into(),
        conflist: None,
        nft: nft.as_ref().map(|_| NftRecord {
            table: table.table.clone(),
            before: nft_live.clone(),
        }),
    };
    if let Some((path, _, patched)) = &conflist {
        match netqos::apply::conflist_file::backup_path(&dir.path, path) {
            Ok(backup) => {
                record.conflist = Some(netqos::apply::conflist_file::ConflistRecord {
                    path: path.clone(),
                    backup,
                    patched: patched.clone(),
                })
            }
            Err(e) => {
                eprintln!("netqos: {e}; nothing changed");
                return Exit::Io;
            }
        }
    }
    let saved = dir
        .save_record(&record)
        .and_then(|()| dir.set_last(&record.id));
    if let Err(e) = saved {
        eprintln!("netqos: {e}; nothing changed");
        return Exit::Io;
    }
    if let Some(window) = a.confirm {
        let pending = Pending {
            id: record.id.clone(),
            deadline: txn::now() + window.as_secs(),
        };
        if let Err(e) = dir.set_pending(Some(&pending)) {
            eprintln!("netqos: {e}; nothing changed");
            return Exit::Io;
        }
        if let Err(e) = spawn_reverter(&dir, &pending) {
            let _ = dir.set_pending(None);
            eprintln!("netqos: cannot start the revert timer: {e}; nothing changed");
            return Exit::Io;
        }
    }
    timings.mark("diff and snapshot");
    let mut journal = match dir.journal(&record.id) {
        Ok(j) => j,
        Err(e) => {
            let _ = dir.set_pending(None);
            eprintln!("netqos: {e}; nothing changed");
            return Exit::Io;
        }
    };
    let mut result = txn::execute(&mut kernel, &changes, &mut journal, Hooks::from_env());
    timings.mark("send");
    // Read back: the kernel must now hold the target (a change it accepted but applied
    // differently, or another writer in between, fails the apply and is undone).
    if result.is_ok() {
        let left = kernel
            .read(&target.devices())
            .map_err(|e| e.to_string())
            .and_then(|live| diff::diff(&live, &target, a.opts));
        let problem = match left {
            Ok(c) if c.is_empty() => None,
            Ok(c) => Some(format!(
                "the kernel does not hold what was sent: {} difference(s), first: {}",
                c.len(),
                c[0].describe()
            )),
            Err(e) => Some(e),
        };
        if let Some(message) = problem {
            result = Err((
                changes.len(),
                netqos::apply::kernel::KernelError {
                    what: "verifying the applied state".into(),
                    errno: None,
                    message,
                },
            ));
        }
    }
    timings.mark("verify");
    // netqos's nftables table once the classes its priorities name exist.
    if let (Ok(_), Some(c)) = (&result, &nft) {
        match table.apply(c) {
            Ok(line) => {
                if !ui.quiet && ui.verbose {
                    eprintln!("{line}");
                }
            }
            Err(e) => {
                result = Err((
                    changes.len(),
                    netqos::apply::kernel::KernelError {
                        what: format!("nftables table inet {}", table.table),
                        errno: None,
                        message: e.to_string(),
                    },
                ));
            }
        }
        timings.mark("nft");
    }
    // The conflist last: only once the kernel holds the policy.
    if let (Ok(_), Some((path, original, patched))) = (&result, &conflist) {
        match netqos::apply::conflist_file::install(&dir.path, path, original, patched) {
            Ok(_) => {
                if !ui.quiet {
                    eprintln!(
                        "conflist: patched {}; pods created from now on are shaped",
                        path.display()
                    );
                }
            }
            Err(e) => {
                result = Err((
                    changes.len(),
                    netqos::apply::kernel::KernelError {
                        what: format!("conflist {}", path.display()),
                        errno: None,
                        message: e.to_string(),
                    },
                ));
            }
        }
    }
    // Probes last: new connections through the finished tree (and the new conflist).
    if result.is_ok() {
        for p in a.probes {
            match p.run(a.probe_timeout) {
                Ok(t) => {
                    if !ui.quiet {
                        eprintln!("probe {p}: connected in {} ms", t.as_millis());
                    }
                }
                Err(message) => {
                    result = Err((
                        changes.len(),
                        netqos::apply::kernel::KernelError {
                            what: format!("probe {p}"),
                            errno: None,
                            message,
                        },
                    ));
                    break;
                }
            }
        }
        timings.mark("probes");
    }
    for w in kernel.warnings() {
        eprintln!("netqos: kernel warning: {w}");
    }
    match result {
        Ok(n) => {
            let _ = dir.set_outcome(&mut record, "applied");
            if let Err(e) = dir.replace_applied(&record.id, &target) {
                eprintln!("netqos: {e}");
            }
            if let Err(e) = nft_table::set_applied(&dir.path, table.want.as_deref()) {
                eprintln!("netqos: {e}");
            }
            timings.mark("record");
            if !ui.quiet {
                outln!(
                    "{name}: applied {n} change(s) in {} ms (transaction {})",
                    started.elapsed().as_millis(),
                    record.id
                );
                if ui.verbose {
                    print_changes(&changes);
                    if let Some(c) = &nft {
                        outln!("  {}", c.describe(&table.table));
                    }
                }
                if let Some(w) = a.confirm {
                    outln!(
                        "reverts in {} s unless `netqos confirm` runs (from any session)",
                        w.as_secs()
                    );
                }
            }
            Exit::Ok
        }
        Err((n, e)) => {
            if n < changes.len() {
                eprintln!("netqos: change {} of {} failed: {e}", n + 1, changes.len());
            } else {
                eprintln!("netqos: after all {} change(s): {e}", changes.len());
            }
            eprintln!("netqos: undoing the {n} change(s) made, back to the snapshot");
            let inverses = dir.inverses(&record.id);
            // The nftables table first: no priority may name a class that goes.
            let nft_undone = record
                .nft
                .as_ref()
                .map_or(Ok(false), NftTable::restore)
                .map_err(|e| format!("nftables table inet {}: {e}", table.table));
            let mut undone = txn::restore(&mut kernel, &record, &inverses);
            if let (Ok(_), Err(e)) = (&undone, nft_undone) {
                undone = Err(e);
            }
            if let (Ok(_), Some(c)) = (&undone, &record.conflist)
                && let Err(e) = netqos::apply::conflist_file::restore(c)
            {
                undone = Err(format!("conflist {}: {e}", c.path.display()));
            }
            let _ = dir.set_pending(None);
            match undone {
                Ok(_) => {
                    let _ = dir.set_outcome(&mut record, "failed, rolled back");
                    eprintln!("netqos: the devices are as they were before the apply");
                    Exit::Failed
                }
                Err(e2) => {
                    let _ = dir.set_outcome(&mut record, "failed, rollback failed");
                    eprintln!(
                        "netqos: undo failed too: {e2}\nnetqos: inspect with `netqos status`, then \
                         retry `netqos rollback`"
                    );
                    Exit::RollbackFailed
                }
            }
        }
    }
}

/// Says so when a device the policy shapes carries a default route and neither
/// `--confirm` nor `--probe` guards the apply: a wrong tree there can cut the node off
/// (reliability F11). A warning only: shaping that NIC is the common case.
fn warn_default_route(kernel: &mut netqos::apply::kernel::NetlinkKernel, devices: &[String]) {
    let Ok(routed) = kernel.default_route_devices() else {
        return;
    };
    for d in devices.iter().filter(|d| routed.contains(d)) {
        eprintln!(
            "netqos: warning: {d} carries the default route; a mistake here can cut this node \
             off. Consider --confirm 120s (reverts unless `netqos confirm` runs) and --probe \
             tcp:APISERVER:6443"
        );
    }
}

/// Starts `netqos __revert-after` detached: its own session (it calls setsid), no
/// terminal, output to `revert.log` in the state directory. It outlives this process.
fn spawn_reverter(dir: &StateDir, p: &Pending) -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path.join("revert.log"))?;
    Command::new(exe)
        .arg("__revert-after")
        .arg("--state-dir")
        .arg(&dir.path)
        .arg(&p.id)
        .arg(p.deadline.to_string())
        .env_remove("NETQOS_FAIL_AFTER")
        .env_remove("NETQOS_PAUSE_AFTER")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    Ok(())
}
