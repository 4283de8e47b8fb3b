//! The transaction log of scoped applies (`apply::state_wal`) against the in-memory kernel:
//! a scoped apply writes two synced lines and no per-transaction file, and `status`'s
//! readers (last, applied, interrupted) see it; a process dying at each crash point of
//! the protocol (before the record, after it, mid-send, after the verified send, after
//! the outcome) leaves a state that `netqos rollback` returns to before the transaction
//! and that the next apply (an agent restarting) undoes or completes; state directories
//! written by the previous format (an interrupted scoped transaction in `current` and
//! `txn/ID.json`) are still recovered; folding the log twice (a fold killed before it
//! emptied the log) is the same fold; the rollback of an apply awaiting confirmation gives
//! `last` back to the apply before it.
//!
//! A crash is a panic that unwinds out of the transaction at that point (from the
//! observer's phase, or from the kernel's `send`), so nothing after it runs, as with
//! SIGKILL; `resume_unwind` does not print a panic message.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use netqos::apply::diff::{Options as DiffOptions, diff};
use netqos::apply::fake::FakeKernel;
use netqos::apply::kernel::{Kernel, KernelError};
use netqos::apply::model::Change;
use netqos::apply::state::{self, Live, Target};
use netqos::apply::state_dir::{Pending, StateDir, now};
use netqos::apply::state_scope::Scope;
use netqos::apply::transaction::{
    self, Base, Confirm, Observer, Options, Outcome, Reverter, Silent, Transaction,
};
use netqos::vars::ExternalVars;

use crate::support::TempDir;

const POLICY: &str = "netqos 1
interface eth0 {
    rate 1gbit
    class cp { rate 200mbit ceil 1gbit prio 0 match dst 10.0.0.10 }
    class pods {
        rate 600mbit
        match udp dport 8472
        class batch { rate 100mbit ceil 300mbit match src 10.42.3.0/24 }
        class web { rate 400mbit default }
    }
    class bulk { rate 100mbit default }
}
";

fn target(src: &str) -> Target {
    let model = netqos::check_source(src, &ExternalVars::default())
        .model
        .expect("valid policy");
    state::from_plan(&netqos::lower::lower(&model)).expect("target")
}

/// The policy and an edit of two classes (four changes: two classes, two leaf queues).
fn a_and_b() -> (Target, Target) {
    let b = POLICY
        .replace("rate 100mbit ceil 300mbit", "rate 150mbit ceil 300mbit")
        .replace("class bulk { rate 100mbit", "class bulk { rate 120mbit");
    (target(POLICY), target(&b))
}

fn dir(tag: &str) -> (TempDir, StateDir) {
    let t = TempDir::new(&format!("wal-{tag}"));
    let d = StateDir::open(&t.join("state")).expect("state dir");
    (t, d)
}

fn options() -> Options<'static> {
    Options {
        source: "test".into(),
        ..Default::default()
    }
}

/// A whole-tree apply (what `netqos apply` and an agent's first apply do).
fn whole(k: &mut dyn Kernel, d: &StateDir, t: &Target) -> Outcome {
    Transaction::new(k, d, options())
        .apply(t.clone())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A scoped apply over `prev`, nothing touched by events (the agent's re-apply).
fn scoped(
    k: &mut dyn Kernel,
    d: &StateDir,
    prev: &Target,
    next: &Target,
    observer: &mut dyn Observer,
) -> Outcome {
    let touched = Scope::default();
    let o = Options {
        base: Some(Base {
            prev,
            touched: Some(&touched),
        }),
        ..options()
    };
    Transaction::new(k, d, o)
        .observer(observer)
        .apply_ref(next)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Dies when a phase ends (`read`, `diff and snapshot`, `send`, `verify`, `resources`,
/// `record`).
struct DieAt(&'static str);

impl Observer for DieAt {
    fn phase(&mut self, name: &'static str) {
        if name == self.0 {
            resume_unwind(Box::new(format!("killed after {name}")));
        }
    }
}

/// A kernel that dies at its `left`-th send (0: the first).
struct Dying<'a> {
    k: &'a mut FakeKernel,
    left: usize,
}

impl Kernel for Dying<'_> {
    fn read(&mut self, devices: &[String]) -> Result<Live, KernelError> {
        self.k.read(devices)
    }
    fn send(&mut self, c: &Change) -> Result<(), KernelError> {
        if self.left == 0 {
            resume_unwind(Box::new("killed mid-send"));
        }
        self.left -= 1;
        self.k.send(c)
    }
}

/// Whether a kernel holding `live` holds `t` (the applied target, whatever its order).
fn holds(live: &Live, t: &Target) -> bool {
    diff(live, t, DiffOptions::default()).is_ok_and(|c| c.is_empty())
}

const POINTS: [&str; 5] = [
    "read",
    "diff and snapshot",
    "mid-send",
    "resources",
    "record",
];

/// Runs the scoped apply a → b and kills it at `point`.
fn crash(point: &str, k: &mut FakeKernel, d: &StateDir, a: &Target, b: &Target) {
    let died = catch_unwind(AssertUnwindSafe(|| {
        if point == "mid-send" {
            let mut dying = Dying { k, left: 2 };
            scoped(&mut dying, d, a, b, &mut Silent);
        } else {
            let name = POINTS.iter().find(|p| **p == point).copied().unwrap_or("");
            scoped(k, d, a, b, &mut DieAt(name));
        }
    }));
    assert!(died.is_err(), "{point}: the transaction was not killed");
}

/// Issue 14: a scoped apply writes its record and its outcome as two lines of
/// `txn.wal` (no per-transaction file, no `current`), and the readers `status` and
/// rollback use see it: the undo point, the applied target, its record and scope.
#[test]
fn a_scoped_apply_is_two_lines_of_the_log_and_the_readers_see_it() {
    let (_t, d) = dir("lines");
    let (a, b) = a_and_b();
    let mut k = FakeKernel::with_devices(&["eth0"]);
    let Outcome::Applied(first) = whole(&mut k, &d, &a) else {
        panic!("a not applied");
    };
    let Outcome::Applied(second) = scoped(&mut k, &d, &a, &b, &mut Silent) else {
        panic!("b not applied");
    };
    assert_eq!(second.changes.len(), 4, "{:#?}", second.changes);
    assert!(second.scope.is_some());
    let log = std::fs::read_to_string(d.path.join("txn.wal")).expect("the log");
    let kinds: Vec<&str> = log
        .lines()
        .map(|l| l.split('"').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(kinds.first(), Some(&"begin"), "{log}");
    assert_eq!(kinds.last(), Some(&"end"), "{log}");
    // Each change's inverse before it is sent, and the window's answer.
    assert!(
        kinds.iter().filter(|k| **k == "journal").count() >= 4,
        "{log}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k != "journal").count(),
        2,
        "{log}"
    );
    assert!(!d.path.join(format!("txn/{}.json", second.id)).exists());
    assert!(!d.path.join("current").exists());
    assert!(d.path.join(format!("txn/{}.json", first.id)).exists());
    assert_eq!(d.last_id().unwrap().as_deref(), Some(second.id.as_str()));
    let rec = d.last().unwrap().expect("the record");
    assert_eq!(rec.outcome, "applied");
    assert!(rec.scope.is_some());
    assert!(d.interrupted().unwrap().is_none());
    let live = k.read(&b.devices()).unwrap();
    assert!(holds(&live, &d.applied().unwrap().expect("applied")));
    // A second edit back: two more lines; the undo point follows.
    let Outcome::Applied(third) = scoped(&mut k, &d, &b, &a, &mut Silent) else {
        panic!("a again not applied");
    };
    assert_eq!(d.last_id().unwrap().as_deref(), Some(third.id.as_str()));
    let live = k.read(&a.devices()).unwrap();
    assert!(holds(&live, &d.applied().unwrap().expect("applied")));
    // `netqos rollback` folds the log into the files and undoes the last one.
    let mut last = d.last().unwrap().unwrap();
    transaction::rollback(&mut k, &d, &mut last, "rolled back", &mut Silent).unwrap();
    assert_eq!(std::fs::metadata(d.path.join("txn.wal")).unwrap().len(), 0);
    for id in [&second.id, &third.id] {
        assert!(
            d.path.join(format!("txn/{id}.json")).exists(),
            "{id} folded"
        );
    }
    assert_eq!(d.record(&third.id).unwrap().unwrap().outcome, "rolled back");
    let live = k.read(&b.devices()).unwrap();
    assert!(holds(&live, &b), "back to b");
    assert!(holds(&live, &d.applied().unwrap().expect("applied")));
}

/// What a state directory and the kernel say after a crash at `point`.
fn check_after_crash(
    point: &str,
    k: &mut FakeKernel,
    d: &StateDir,
    first: &str,
    ab: &(Live, Live),
) {
    let (at_a, at_b) = ab;
    let live = k.read(&["eth0".to_string()]).unwrap();
    let interrupted = d.interrupted().unwrap();
    let done = point == "record";
    let sent = matches!(point, "resources" | "record");
    assert_eq!(
        interrupted.is_some(),
        !done && point != "read",
        "{point}: interrupted {interrupted:?}"
    );
    match point {
        "mid-send" => assert!(live != *at_a && live != *at_b, "{point}: half sent"),
        _ if sent => assert_eq!(&live, at_b, "{point}"),
        _ => assert_eq!(&live, at_a, "{point}"),
    }
    let last = d.last_id().unwrap().unwrap();
    assert_eq!(last != first, done, "{point}: last {last}");
    let applied = d.applied().unwrap().unwrap();
    assert!(
        holds(if done { at_b } else { at_a }, &applied),
        "{point}: the applied target"
    );
}

/// Issue 14: a scoped transaction killed at each point of the protocol. `netqos
/// rollback` then undoes the interrupted one to its snapshot (or rolls back the last one
/// when none is interrupted), and the next apply (an agent restarting) undoes it first
/// and applies; the undo point and the applied target never name a transaction that did
/// not end.
#[test]
fn a_scoped_apply_killed_at_each_crash_point_is_recovered() {
    let (a, b) = a_and_b();
    for point in POINTS {
        for recovery in ["rollback", "apply"] {
            let (_t, d) = dir("crash");
            let mut k = FakeKernel::with_devices(&["eth0"]);
            let pristine = k.read(&a.devices()).unwrap();
            let Outcome::Applied(first) = whole(&mut k, &d, &a) else {
                panic!("a not applied");
            };
            let at_a = k.read(&a.devices()).unwrap();
            let mut kb = k.clone();
            for c in diff(&at_a, &b, DiffOptions::default()).unwrap() {
                kb.send(&c).unwrap();
            }
            let ab = (at_a.clone(), kb.read(&b.devices()).unwrap());
            crash(point, &mut k, &d, &a, &b);
            check_after_crash(point, &mut k, &d, &first.id, &ab);
            if recovery == "rollback" {
                match d.interrupted().unwrap() {
                    Some(r) => {
                        transaction::undo_interrupted(&mut k, &d, &r).unwrap();
                        assert_eq!(
                            d.record(&r.id).unwrap().unwrap().outcome,
                            "interrupted, rolled back"
                        );
                        assert_eq!(k.read(&a.devices()).unwrap(), at_a, "{point}");
                        assert_eq!(d.last_id().unwrap(), Some(first.id.clone()));
                    }
                    None => {
                        let mut last = d.last().unwrap().unwrap();
                        transaction::rollback(&mut k, &d, &mut last, "rolled back", &mut Silent)
                            .unwrap();
                        let live = k.read(&a.devices()).unwrap();
                        let want = if point == "record" { &at_a } else { &pristine };
                        assert_eq!(&live, want, "{point}: rolled back");
                    }
                }
                assert!(d.interrupted().unwrap().is_none(), "{point}");
            } else {
                let out = whole(&mut k, &d, &b);
                assert!(
                    matches!(out, Outcome::Applied(_) | Outcome::Unchanged),
                    "{point}: {out:?}"
                );
                assert_eq!(k.read(&b.devices()).unwrap(), ab.1, "{point}: b holds");
                assert!(d.interrupted().unwrap().is_none(), "{point}");
                let applied = d.applied().unwrap().unwrap();
                assert!(holds(&ab.1, &applied), "{point}: applied is b");
                let last = d.last().unwrap().unwrap();
                assert!(last.outcome.starts_with("applied"), "{point}: {last:?}");
            }
        }
    }
}

/// A reverter that is never heard of again (the window is closed by hand).
struct Gone;

impl Reverter for Gone {
    fn start(&self, _: &StateDir, _: &Pending) -> std::io::Result<()> {
        Ok(())
    }
}

/// Issue 14: a state directory of the previous format — a scoped transaction recorded in
/// `txn/ID.json` and named in `current`, killed mid-send (what an agent of the previous
/// version left) — is recovered by the new version: an agent's scoped apply undoes it
/// first (and then works on the whole tree), and `netqos rollback` returns to before it.
#[test]
fn an_interrupted_transaction_of_the_previous_format_is_recovered() {
    let (a, b) = a_and_b();
    for recovery in ["agent", "rollback"] {
        let (_t, d) = dir("oldformat");
        let mut k = FakeKernel::with_devices(&["eth0"]);
        whole(&mut k, &d, &a);
        let at_a = k.read(&a.devices()).unwrap();
        // A scoped transaction with a confirm window writes the per-transaction files, as
        // every scoped transaction did before the log.
        let died = catch_unwind(AssertUnwindSafe(|| {
            let touched = Scope::default();
            let o = Options {
                base: Some(Base {
                    prev: &a,
                    touched: Some(&touched),
                }),
                confirm: Some(Confirm {
                    window: std::time::Duration::from_secs(3600),
                    reverter: &Gone,
                }),
                ..options()
            };
            let mut dying = Dying { k: &mut k, left: 2 };
            let _ = Transaction::new(&mut dying, &d, o).apply_ref(&b);
        }));
        assert!(died.is_err());
        d.set_pending(None).unwrap(); // the previous agent had no confirm window
        let id = std::fs::read_to_string(d.path.join("current")).expect("current");
        let id = id.trim();
        assert!(d.path.join(format!("txn/{id}.json")).exists());
        let log = std::fs::read(d.path.join("txn.wal")).unwrap_or_default();
        assert!(log.is_empty(), "the previous format has no log");
        assert_eq!(d.interrupted().unwrap().map(|r| r.id), Some(id.to_string()));
        assert_ne!(k.read(&a.devices()).unwrap(), at_a, "half sent");
        if recovery == "agent" {
            let out = scoped(&mut k, &d, &a, &b, &mut Silent);
            assert!(matches!(out, Outcome::Applied(_)), "{out:?}");
            let live = k.read(&b.devices()).unwrap();
            assert!(holds(&live, &b));
            assert!(holds(&live, &d.applied().unwrap().unwrap()));
        } else {
            let r = d.interrupted().unwrap().unwrap();
            transaction::undo_interrupted(&mut k, &d, &r).unwrap();
            assert_eq!(k.read(&a.devices()).unwrap(), at_a);
        }
        assert!(d.interrupted().unwrap().is_none());
        assert!(!d.path.join("current").exists());
    }
}

/// Issue 14 (bug): after the rollback of an apply awaiting confirmation, `last` named
/// the rolled-back transaction. It names the apply before it again (none: no `last`), so
/// the next rollback undoes that one; the rollback of a confirmed apply keeps `last`
/// (running rollback again changes nothing).
#[test]
fn the_rollback_of_an_unconfirmed_apply_gives_last_back() {
    let (a, b) = a_and_b();
    let (_t, d) = dir("unconfirmed");
    let mut k = FakeKernel::with_devices(&["eth0"]);
    let pristine = k.read(&a.devices()).unwrap();
    let Outcome::Applied(first) = whole(&mut k, &d, &a) else {
        panic!("a not applied");
    };
    let at_a = k.read(&a.devices()).unwrap();
    let confirm = |k: &mut FakeKernel, t: &Target| {
        let o = Options {
            confirm: Some(Confirm {
                window: std::time::Duration::from_secs(3600),
                reverter: &Gone,
            }),
            ..options()
        };
        match Transaction::new(k, &d, o).apply(t.clone()).unwrap() {
            Outcome::Applied(x) => x.id,
            other => panic!("{other:?}"),
        }
    };
    let second = confirm(&mut k, &b);
    assert_eq!(d.last_id().unwrap(), Some(second.clone()));
    let mut last = d.last().unwrap().unwrap();
    transaction::rollback(&mut k, &d, &mut last, "rolled back", &mut Silent).unwrap();
    assert_eq!(k.read(&a.devices()).unwrap(), at_a);
    assert_eq!(
        d.last_id().unwrap(),
        Some(first.id.clone()),
        "last is a again"
    );
    assert!(d.pending().unwrap().is_none());
    assert_eq!(d.record(&second).unwrap().unwrap().outcome, "rolled back");
    // The next rollback undoes a.
    let mut last = d.last().unwrap().unwrap();
    transaction::rollback(&mut k, &d, &mut last, "rolled back", &mut Silent).unwrap();
    assert_eq!(k.read(&a.devices()).unwrap(), pristine);
    // An unconfirmed first apply leaves no undo point after its revert.
    let (_t2, d2) = dir("unconfirmed-first");
    let mut k2 = FakeKernel::with_devices(&["eth0"]);
    let o = Options {
        confirm: Some(Confirm {
            window: std::time::Duration::from_secs(3600),
            reverter: &Gone,
        }),
        ..options()
    };
    let Outcome::Applied(only) = Transaction::new(&mut k2, &d2, o).apply(a.clone()).unwrap() else {
        panic!("not applied");
    };
    d2.set_pending(Some(&Pending {
        id: only.id.clone(),
        deadline: now() - 1,
    }))
    .unwrap();
    let mut last = d2.last().unwrap().unwrap();
    transaction::rollback(
        &mut k2,
        &d2,
        &mut last,
        "reverted, not confirmed",
        &mut Silent,
    )
    .unwrap();
    assert_eq!(d2.last_id().unwrap(), None);
    // A confirmed apply rolled back keeps `last`: running rollback again changes nothing.
    let (_t3, d3) = dir("confirmed");
    let mut k3 = FakeKernel::with_devices(&["eth0"]);
    whole(&mut k3, &d3, &a);
    let Outcome::Applied(kept) = whole(&mut k3, &d3, &b) else {
        panic!("b not applied");
    };
    let mut last = d3.last().unwrap().unwrap();
    transaction::rollback(&mut k3, &d3, &mut last, "rolled back", &mut Silent).unwrap();
    assert_eq!(d3.last_id().unwrap(), Some(kept.id));
}

/// Issue 14: folding the log is idempotent — a fold killed before it empties the log
/// (simulated: the log's bytes put back) and done again leaves the same undo point,
/// records and applied target, and a fold of an empty log changes nothing.
#[test]
fn a_fold_done_twice_is_the_same_fold() {
    let (a, b) = a_and_b();
    let (_t, d) = dir("fold");
    let mut k = FakeKernel::with_devices(&["eth0"]);
    whole(&mut k, &d, &a);
    let Outcome::Applied(one) = scoped(&mut k, &d, &a, &b, &mut Silent) else {
        panic!("b not applied");
    };
    let Outcome::Applied(two) = scoped(&mut k, &d, &b, &a, &mut Silent) else {
        panic!("a not applied");
    };
    let log = std::fs::read(d.path.join("txn.wal")).unwrap();
    let mut seen = |d: &StateDir| {
        let live = k.read(&a.devices()).unwrap();
        (
            d.last_id().unwrap(),
            d.record(&one.id).unwrap().map(|r| r.outcome),
            d.record(&two.id).unwrap().map(|r| r.outcome),
            holds(&live, &d.applied().unwrap().unwrap()),
        )
    };
    let before = seen(&d);
    assert_eq!(before.0.as_deref(), Some(two.id.as_str()));
    assert!(before.3, "the applied target is a");
    d.fold().unwrap();
    assert_eq!(seen(&d), before, "after a fold");
    std::fs::write(d.path.join("txn.wal"), &log).unwrap();
    d.fold().unwrap();
    assert_eq!(seen(&d), before, "after the same fold again");
    d.fold().unwrap();
    assert_eq!(seen(&d), before, "after a fold of nothing");
    // The next scoped apply goes on from the folded files.
    let Outcome::Applied(three) = scoped(&mut k, &d, &a, &b, &mut Silent) else {
        panic!("b again not applied");
    };
    assert_eq!(d.last_id().unwrap(), Some(three.id));
    let live = k.read(&b.devices()).unwrap();
    assert!(holds(&live, &d.applied().unwrap().unwrap()));
}
