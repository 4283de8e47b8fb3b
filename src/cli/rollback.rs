//! `netqos rollback` (return to the snapshot of the last apply), `netqos confirm` (keep an
//! apply made with `--confirm`), and the hidden `netqos __revert-after` that reverts an
//! unconfirmed apply from a detached session.

use std::path::Path;
use std::time::Duration;

use super::live::{lock, open_kernel, state_dir};
use super::{Exit, Ui};
use netqos::apply::txn::{self, Record, StateDir};

/// Restores the last record's snapshot; `reason` becomes its outcome.
fn restore_last(dir: &StateDir, record: &mut Record, reason: &str, ui: Ui) -> Exit {
    let mut kernel = match open_kernel(Some(&record.target)) {
        Ok(k) => k,
        Err(e) => return e,
    };
    // The nftables table first: no priority may name a class that goes.
    if let Some(t) = &record.nft {
        match netqos::apply::nft_table::NftTable::restore(t) {
            Ok(changed) => {
                if changed && !ui.quiet {
                    eprintln!("nftables: table inet {} restored", t.table);
                }
                if let Err(e) =
                    netqos::apply::nft_table::set_applied(&dir.path, t.before.as_deref())
                {
                    eprintln!("netqos: {e}");
                }
            }
            Err(e) => {
                eprintln!(
                    "netqos: rollback of {}: nftables table inet {}: {e}",
                    record.id, t.table
                );
                return Exit::RollbackFailed;
            }
        }
    }
    match txn::restore(&mut kernel, record, &[]) {
        Ok(n) => {
            if let Some(c) = &record.conflist {
                match netqos::apply::conflist_file::restore(c) {
                    Ok(netqos::apply::conflist_file::Restored::Restored) => {
                        if !ui.quiet {
                            eprintln!("conflist: restored {}", c.path.display());
                        }
                    }
                    Ok(netqos::apply::conflist_file::Restored::AlreadyDone) => {}
                    Err(e) => {
                        eprintln!("netqos: rollback of {}: {e}", record.id);
                        return Exit::RollbackFailed;
                    }
                }
            }
            let _ = dir.set_outcome(record, reason);
            let _ = dir.set_pending(None);
            if let Err(e) = dir.restore_applied(&record.id) {
                eprintln!("netqos: {e}");
            }
            if !ui.quiet {
                outln!(
                    "{reason}: transaction {} undone with {n} change(s); the devices are as \
                     before it",
                    record.id
                );
            }
            Exit::Ok
        }
        Err(e) => {
            eprintln!("netqos: rollback of {} failed: {e}", record.id);
            Exit::RollbackFailed
        }
    }
}

pub fn rollback(state: Option<&Path>, ui: Ui) -> Exit {
    let dir = match state_dir(state) {
        Ok(d) => d,
        Err(e) => return e,
    };
    let _lock = match lock(&dir, false) {
        Ok(l) => l,
        Err(e) => return e,
    };
    match dir.last() {
        Ok(Some(mut r)) => restore_last(&dir, &mut r, "rolled back", ui),
        Ok(None) => {
            eprintln!(
                "netqos: nothing to roll back: no apply is recorded in {}",
                dir.path.display()
            );
            Exit::Io
        }
        Err(e) => {
            eprintln!("netqos: {e}");
            Exit::Io
        }
    }
}

pub fn confirm(state: Option<&Path>, ui: Ui) -> Exit {
    let dir = match state_dir(state) {
        Ok(d) => d,
        Err(e) => return e,
    };
    let _lock = match lock(&dir, true) {
        Ok(l) => l,
        Err(e) => return e,
    };
    match dir.pending() {
        Ok(Some(p)) => {
            if let Err(e) = dir.set_pending(None) {
                eprintln!("netqos: {e}");
                return Exit::Io;
            }
            if let Ok(Some(mut r)) = dir.last()
                && r.id == p.id
            {
                let _ = dir.set_outcome(&mut r, "applied, confirmed");
            }
            if !ui.quiet {
                outln!("confirmed transaction {}; it stays", p.id);
            }
            Exit::Ok
        }
        Ok(None) => {
            eprintln!(
                "netqos: no apply awaits confirmation (none was made with --confirm, or it was \
                 already reverted: see `netqos status`)"
            );
            Exit::Io
        }
        Err(e) => {
            eprintln!("netqos: {e}");
            Exit::Io
        }
    }
}

/// Runs detached: a new session, so the end of the invoking terminal or SSH session
/// does not reach it. Sleeps until `deadline`, then reverts `id` if it is still pending.
pub fn revert_after(state: Option<&Path>, id: &str, deadline: u64, ui: Ui) -> Exit {
    let _ = rustix::process::setsid();
    let dir = match state_dir(state) {
        Ok(d) => d,
        Err(e) => return e,
    };
    loop {
        let now = txn::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(((deadline - now) * 1000).min(1000)));
        // Confirmed (or rolled back) early: nothing left to do.
        if !matches!(dir.pending(), Ok(Some(p)) if p.id == id) {
            return Exit::Ok;
        }
    }
    let _lock = match lock(&dir, true) {
        Ok(l) => l,
        Err(e) => return e,
    };
    match dir.pending() {
        Ok(Some(p)) if p.id == id => {}
        _ => return Exit::Ok,
    }
    match dir.last() {
        Ok(Some(mut r)) if r.id == id => {
            eprintln!("netqos: transaction {id} was not confirmed in time; reverting");
            restore_last(&dir, &mut r, "reverted, not confirmed", ui)
        }
        _ => {
            let _ = dir.set_pending(None);
            eprintln!("netqos: transaction {id} is no longer the last one; not reverting");
            Exit::Io
        }
    }
}
