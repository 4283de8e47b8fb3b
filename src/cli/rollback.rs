//! `netqos rollback` (return to the snapshot of the last apply), `netqos confirm` (keep an
//! apply made with `--confirm`), and the hidden `netqos __revert-after` that reverts an
//! unconfirmed apply from a detached session.

use std::path::Path;
use std::time::Duration;

use super::live::{lock, open_kernel, state_dir};
use super::{Exit, Ui};
use netqos::apply::state_dir::{self, Pending, Record, StateDir};
use netqos::apply::transaction::{self, Observer};

/// Resource lines (conflist restored) unless quiet.
struct Notes(Ui);

impl Observer for Notes {
    fn note(&mut self, line: &str) {
        if !self.0.quiet {
            eprintln!("{line}");
        }
    }
}

/// Restores the last record's snapshot; `reason` becomes its outcome.
fn restore_last(dir: &StateDir, record: &mut Record, reason: &str, ui: Ui) -> Exit {
    let mut kernel = match open_kernel(Some(&record.target)) {
        Ok(k) => k,
        Err(e) => return e,
    };
    match transaction::rollback(&mut kernel, dir, record, reason, &mut Notes(ui)) {
        Ok(done) => {
            if let Some(e) = &done.unrecorded {
                eprintln!("netqos: {e}");
            }
            // The class names `status` and `top` show, as they were before it.
            super::agent::restore_classes(dir, &record.id);
            if !ui.quiet {
                outln!(
                    "{reason}: transaction {} undone with {} change(s); the devices are as \
                     before it",
                    record.id,
                    done.changes
                );
            }
            Exit::Ok
        }
        Err(e) => {
            eprintln!("netqos: rollback of {} failed: {e}", record.id);
            e.exit()
        }
    }
}

/// Undoes the interrupted transaction `r` (killed, or its undo failed) to its own snapshot.
fn undo_interrupted(dir: &StateDir, r: &Record, ui: Ui) -> Exit {
    let mut kernel = match open_kernel(Some(&r.target)) {
        Ok(k) => k,
        Err(e) => return e,
    };
    match transaction::undo_interrupted(&mut kernel, dir, r) {
        Ok(n) => {
            if !ui.quiet {
                outln!(
                    "interrupted transaction {} ({}) undone with {n} change(s); the devices are \
                     as before it",
                    r.id,
                    r.source
                );
            }
            Exit::Ok
        }
        Err(e) => {
            eprintln!(
                "netqos: undo of interrupted transaction {} failed: {e}",
                r.id
            );
            e.exit()
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
    // An interrupted transaction is the most recent change: it is undone first, alone.
    match dir.interrupted().and_then(|i| Ok((i, dir.last()?))) {
        Ok((Some(r), _)) => undo_interrupted(&dir, &r, ui),
        Ok((None, Some(mut r))) => restore_last(&dir, &mut r, "rolled back", ui),
        Ok((None, None)) => {
            eprintln!(
                "netqos: nothing to roll back: no apply is recorded in {}",
                dir.path.display()
            );
            Exit::Io
        }
        Err(e) => {
            eprintln!("netqos: {e}");
            e.exit()
        }
    }
}

/// A confirmation that came after the window closed: the reverter reverts it, or, when it
/// is gone, this does. Never kept (exit 3).
fn too_late(dir: &StateDir, p: &Pending, ui: Ui) -> Exit {
    let ago = state_dir::now().saturating_sub(p.deadline);
    if dir.reverter_alive(&p.id) {
        eprintln!(
            "netqos: the confirm window of transaction {} closed {ago} s ago; its reverter is \
             reverting it",
            p.id
        );
        return Exit::Io;
    }
    eprintln!(
        "netqos: the confirm window of transaction {} closed {ago} s ago and its reverter is \
         gone; reverting it now (apply again to keep the policy)",
        p.id
    );
    match dir.last() {
        Ok(Some(mut r)) if r.id == p.id => {
            let _ = restore_last(dir, &mut r, "reverted, not confirmed", ui);
        }
        _ => {
            let _ = dir.set_pending(None);
        }
    }
    Exit::Io
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
        Ok(Some(p)) if state_dir::now() >= p.deadline => too_late(&dir, &p, ui),
        Ok(Some(p)) if matches!(dir.interrupted(), Ok(Some(r)) if r.id == p.id) => {
            eprintln!(
                "netqos: transaction {} was interrupted before it finished; nothing to keep. \
                 Run `netqos rollback` (or `netqos apply` again)",
                p.id
            );
            Exit::Io
        }
        Ok(Some(p)) => {
            if let Err(e) = dir.set_pending(None) {
                eprintln!("netqos: {e}");
                return e.exit();
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
            e.exit()
        }
    }
}

/// Runs detached: a new session, so the end of the invoking terminal or SSH session
/// does not reach it. Sleeps until `deadline`, then reverts `id` if it is still pending.
/// Its stdin is the locked `txn/ID.reverter` file: while it lives, others see it alive.
pub fn revert_after(state: Option<&Path>, id: &str, deadline: u64, ui: Ui) -> Exit {
    let _ = rustix::process::setsid();
    let dir = match state_dir(state) {
        Ok(d) => d,
        Err(e) => return e,
    };
    loop {
        let now = state_dir::now();
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
    eprintln!("netqos: transaction {id} was not confirmed in time; reverting");
    match (dir.interrupted(), dir.last()) {
        (Ok(Some(r)), _) if r.id == id => undo_interrupted(&dir, &r, ui),
        (_, Ok(Some(mut r))) if r.id == id => {
            restore_last(&dir, &mut r, "reverted, not confirmed", ui)
        }
        _ => {
            let _ = dir.set_pending(None);
            eprintln!("netqos: transaction {id} is no longer the last one; not reverting");
            Exit::Io
        }
    }
}
