//! The apply transaction, against any `Kernel`: read the managed state → diff → record
//! (snapshot and resources, fsynced) → confirm window → execute (journaled) → verify
//! (read back) → resources (conflist, probes, …) → on any failure, undo to the snapshot.
//! `rollback` returns a recorded transaction to its snapshot.
//!
//! A scoped transaction without a confirm window records itself in the transaction log
//! (`state_wal`: two synced lines, its crash points in that module's doc); any other
//! transaction, rollback and undo folds that log into the per-transaction files first.
//!
//! Nothing here reads the environment or prints: test hooks come in `Options`, lines for
//! the operator go to an `Observer`, and the result is a typed `Outcome` (or an
//! `ApplyError` when nothing was changed) that the CLI maps to an exit status.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use crate::apply::device_lock::{self, DeviceId, DeviceLocks, LockError};
use crate::apply::diff::{self, DiffError};
use crate::apply::kernel::{Kernel, KernelError};
use crate::apply::model::Change;
use crate::apply::resource::{Recorded, Resource, ResourceError};
use crate::apply::state::{self, Live, Target};
use crate::apply::state_applied::{Before, Line};
use crate::apply::state_dir::{self, LastBefore, Pending, Record, StateDir, StateError, now};
use crate::apply::state_scope::Scope;
use crate::apply::state_wal::{End, WAL_MAX};
use crate::apply::txn::{self, ExecError, Hooks, Journal, UndoError};
use crate::exit::Exit;

/// Starts whatever reverts an unconfirmed apply at its deadline (the CLI: a detached
/// `netqos __revert-after`; a long-running agent: its own timer).
pub trait Reverter {
    fn start(&self, dir: &StateDir, pending: &Pending) -> std::io::Result<()>;
}

/// A confirm window: the apply reverts by itself unless confirmed within `window`.
pub struct Confirm<'a> {
    pub window: Duration,
    pub reverter: &'a dyn Reverter,
}

/// Receives progress: phase ends (for timings) and lines for the operator.
pub trait Observer {
    /// A phase ended: `read`, `diff and snapshot`, `send`, `verify`, `resources`, `record`.
    fn phase(&mut self, _name: &'static str) {}
    /// A line a quiet run omits (a resource's result, a default-route hint).
    fn note(&mut self, _line: &str) {}
    /// A line always shown (a kernel warning).
    fn warn(&mut self, _line: &str) {}
}

/// An observer that drops everything.
pub struct Silent;

impl Observer for Silent {}

/// How to run an apply.
#[derive(Default)]
pub struct Options<'a> {
    /// The policy's name, kept in the record.
    pub source: String,
    pub diff: diff::Options,
    pub confirm: Option<Confirm<'a>>,
    pub hooks: Hooks,
    /// What a long-running caller knows of the kernel; `None`: nothing (read it all).
    pub base: Option<Base<'a>>,
}

/// The last applied target, kept in memory by a caller that follows the kernel (the
/// agent): the transaction uses it instead of reading `applied.json`, and, when it also
/// knows which objects changed since the kernel last held `prev` wholly, works only on
/// those and the objects the new target changes (`state_scope`).
#[derive(Debug, Clone, Copy)]
pub struct Base<'a> {
    /// What `applied.json` holds (the target of the last successful apply).
    pub prev: &'a Target,
    /// The keys of the kernel objects that changed since the kernel last held `prev`
    /// wholly; `None`: not known (the whole tree is diffed).
    pub touched: Option<&'a Scope>,
}

/// Why an apply stopped before changing anything (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "apply {id} {}",
        if *closed {
            "was not confirmed in time and its reverter is reverting it; try again in a moment"
        } else {
            "awaits confirmation; run `netqos confirm` to keep it or `netqos rollback` to undo \
             it first"
        }
    )]
    Pending { id: String, closed: bool },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Read(#[from] KernelError),
    #[error("device {0} does not exist; check the interface name (`ip link`)")]
    NoDevice(String),
    #[error(transparent)]
    Refused(#[from] DiffError),
    #[error("{0}; nothing changed")]
    Unrecorded(StateError),
    #[error("{what}: {error}; nothing changed")]
    Resource { what: String, error: ResourceError },
    #[error("cannot start the revert timer: {0}; nothing changed")]
    Reverter(std::io::Error),
    #[error(transparent)]
    Busy(#[from] LockError),
    #[error(
        "transaction {id} was interrupted and cannot be undone: {error}; nothing else changed. \
         Inspect with `netqos status`, then retry `netqos rollback`"
    )]
    Interrupted { id: String, error: Box<UndoError> },
}

impl ApplyError {
    pub fn exit(&self) -> Exit {
        match self {
            ApplyError::Interrupted { .. } => Exit::RollbackFailed,
            _ => Exit::Io,
        }
    }
}

/// What failed once changes had started.
#[derive(Debug, thiserror::Error)]
pub enum FailError {
    #[error(transparent)]
    Exec(ExecError),
    #[error(
        "verifying the applied state: the kernel does not hold what was sent: {count} \
         difference(s), first: {first}"
    )]
    Verify { count: usize, first: String },
    #[error("verifying the applied state: {0}")]
    VerifyRead(KernelError),
    #[error("verifying the applied state: {0}")]
    VerifyDiff(Box<DiffError>),
    #[error("{what}: {error}")]
    Resource { what: String, error: ResourceError },
    #[error(
        "device {name} (ifindex {ifindex}) was renamed or replaced while the apply ran; the \
         changes went to that ifindex"
    )]
    DeviceChanged { name: String, ifindex: i32 },
}

/// A failed transaction: which change failed (`at == total`: after all of them) and why.
#[derive(Debug)]
pub struct Failure {
    pub id: String,
    pub at: usize,
    pub total: usize,
    pub error: FailError,
}

/// A successful apply.
#[derive(Debug)]
pub struct Applied {
    pub id: String,
    pub changes: Vec<Change>,
    pub elapsed: Duration,
    /// The confirm window, when one runs.
    pub confirm: Option<Duration>,
    /// The kernel holds the target but the state directory could not say so.
    pub unrecorded: Option<StateError>,
    /// The scope the apply worked on (`None`: the whole tree), verified.
    pub scope: Option<Scope>,
}

/// How an apply that got past its checks ended.
#[derive(Debug)]
pub enum Outcome {
    /// The kernel already held the target and no resource changes anything.
    Unchanged,
    Applied(Applied),
    /// Failed and undone: the devices are as before (exit 4).
    RolledBack(Failure),
    /// Failed, and the undo failed too (exit 5).
    RollbackFailed(Failure, UndoError),
}

impl Outcome {
    pub fn exit(&self) -> Exit {
        match self {
            Outcome::Unchanged | Outcome::Applied(_) => Exit::Ok,
            Outcome::RolledBack(_) => Exit::Failed,
            Outcome::RollbackFailed(..) => Exit::RollbackFailed,
        }
    }
}

/// Reads the devices of `target`; a device the policy names that does not exist (other
/// than an IFB netqos creates) is an error.
pub fn read_target(kernel: &mut dyn Kernel, target: &Target) -> Result<Live, ApplyError> {
    read_target_scoped(kernel, target, None)
}

/// `read_target`, restricted to `scope` when there is one.
pub fn read_target_scoped(
    kernel: &mut dyn Kernel,
    target: &Target,
    scope: Option<&Scope>,
) -> Result<Live, ApplyError> {
    let devices = target.devices();
    let live = match scope {
        Some(s) => kernel.read_scoped(&devices, s)?,
        None => kernel.read(&devices)?,
    };
    for d in &live.devs {
        let created = target
            .links
            .iter()
            .any(|(n, l)| n == &d.name && l.is_some());
        if !d.exists && !created {
            return Err(ApplyError::NoDevice(d.name.clone()));
        }
    }
    Ok(live)
}

/// One apply: build it with `new`, add resources, run it with `apply`.
pub struct Transaction<'a> {
    kernel: &'a mut dyn Kernel,
    dir: &'a StateDir,
    options: Options<'a>,
    resources: Vec<Box<dyn Resource + 'a>>,
    observer: Option<&'a mut dyn Observer>,
    /// The devices locked, by identity: the changes go there, and verification and undo
    /// must find the same devices under the same names.
    pinned: Vec<(String, DeviceId)>,
}

/// The part of a transaction after the record: what undo needs.
struct Started<'t> {
    record: Record,
    changes: Vec<Change>,
    started: Instant,
    /// A scoped record's target is a part; this is the whole target, and the part of the
    /// previous one it replaces.
    whole: Option<(Cow<'t, Target>, Target)>,
    /// Recorded in the transaction log (`state_wal`), extending the `applied.json` of
    /// this fingerprint; `None`: in the per-transaction files.
    logged: Option<String>,
}

impl<'a> Transaction<'a> {
    pub fn new(kernel: &'a mut dyn Kernel, dir: &'a StateDir, options: Options<'a>) -> Self {
        Transaction {
            kernel,
            dir,
            options,
            resources: Vec::new(),
            observer: None,
            pinned: Vec::new(),
        }
    }

    /// Adds a resource; resources apply in the order added, after the tree.
    pub fn resource(mut self, r: impl Resource + 'a) -> Self {
        self.resources.push(Box::new(r));
        self
    }

    pub fn observer(mut self, o: &'a mut dyn Observer) -> Self {
        self.observer = Some(o);
        self
    }

    fn phase(&mut self, name: &'static str) {
        if let Some(o) = self.observer.as_deref_mut() {
            o.phase(name);
        }
    }

    fn note(&mut self, line: &str) {
        if let Some(o) = self.observer.as_deref_mut() {
            o.note(line);
        }
    }

    fn warn(&mut self, line: &str) {
        if let Some(o) = self.observer.as_deref_mut() {
            o.warn(line);
        }
    }

    /// Runs the transaction to `target` (the caller holds the state directory's lock).
    pub fn apply(self, target: Target) -> Result<Outcome, ApplyError> {
        self.apply_cow(Cow::Owned(target))
    }

    /// `apply`, without taking the target (a caller that keeps it: the agent).
    pub fn apply_ref(self, target: &Target) -> Result<Outcome, ApplyError> {
        self.apply_cow(Cow::Borrowed(target))
    }

    fn apply_cow(mut self, target: Cow<'_, Target>) -> Result<Outcome, ApplyError> {
        let base = self.options.base;
        let stored = match base {
            Some(_) => None,
            None => self.dir.applied().ok().flatten(),
        };
        let _locks = self.lock(&target, base.map(|b| b.prev).or(stored.as_ref()))?;
        let recovered = self.recover()?;
        // Devices the last applied policy shaped and this one does not: remove netqos's
        // tree, redirect and IFB there too. (Read again: a revert may have changed it.)
        let stored = match (base, recovered) {
            (Some(_), false) => None,
            _ => self.dir.applied().ok().flatten(),
        };
        let prev = match (base, recovered) {
            (Some(b), false) => Some(b.prev),
            _ => stored.as_ref(),
        };
        let target = match prev {
            Some(p) if state::needs_removals(&target, p) => {
                Cow::Owned(state::with_removals(target.into_owned(), p))
            }
            _ => target,
        };
        let scope = match (base, recovered) {
            (Some(b), false) => b.touched.and_then(|t| {
                let mut s = Scope::between(b.prev, &target)?;
                s.merge(t);
                Some(s)
            }),
            _ => None,
        };
        let started = Instant::now();
        let (live, scope) = match (scope, prev) {
            (Some(s), Some(p)) => {
                let (live, s) = self.read_scope(&target, s, p)?;
                (live, Some(s))
            }
            _ => (read_target(self.kernel, &target)?, None),
        };
        let logged = self.log_or_fold(scope.is_some())?;
        self.warn_default_route(&target);
        self.phase("read");
        let part = scope.as_ref().map(|s| s.restrict_target(&target));
        let changes = diff::diff(&live, part.as_ref().unwrap_or(&target), self.options.diff)?;
        let recorded = self.record_resources()?;
        let before = match (&scope, prev) {
            (Some(s), Some(p)) => Some(s.restrict_target(p)),
            _ => None,
        };
        if changes.is_empty() && recorded.is_empty() {
            self.unchanged(scope.as_ref(), part, before, &target, logged)?;
            return Ok(Outcome::Unchanged);
        }
        let (record_target, whole) = match (part, before) {
            (Some(part), Some(before)) => (part, Some((target, before))),
            _ => (target.into_owned(), None),
        };
        let mut record = Record::new(&self.options.source, record_target, live, recorded);
        record.scope = scope;
        record.last_before = Some(LastBefore {
            id: self.dir.last_id()?,
        });
        let mut run = Started {
            record,
            changes,
            started,
            whole,
            logged,
        };
        let mut journal = self.start(&run)?;
        self.phase("diff and snapshot");
        let result = self.run(&run, &mut journal);
        let _ = journal.flush();
        drop(journal);
        Ok(self.finish(&mut run, result))
    }

    /// Whether this transaction goes to the transaction log (`state_wal`): a scoped one
    /// without a confirm window, over an `applied.json` (its fingerprint is returned).
    /// Otherwise the log is folded first, since this one writes the files it sits above.
    fn log_or_fold(&mut self, scoped: bool) -> Result<Option<String>, ApplyError> {
        let logged = match (scoped, &self.options.confirm) {
            (true, None) => self.dir.applied_fingerprint()?,
            _ => None,
        };
        if logged.is_none() || self.dir.wal_len() > WAL_MAX {
            self.dir.fold()?;
        }
        Ok(logged)
    }

    /// Nothing to send and no resource to change: the applied target may still say
    /// something else (a scoped apply whose objects the kernel already held).
    fn unchanged(
        &mut self,
        scope: Option<&Scope>,
        part: Option<Target>,
        before: Option<Target>,
        target: &Target,
        logged: Option<String>,
    ) -> Result<(), ApplyError> {
        match (scope, part, before, logged) {
            (Some(s), Some(part), Some(before), Some(base)) if part != before => {
                self.dir.wal_applied(Line {
                    base,
                    id: state_dir::new_id(),
                    scope: s.clone(),
                    part,
                })?;
            }
            (Some(s), Some(part), Some(before), None) if part != before => {
                self.dir
                    .patch_applied(&state_dir::new_id(), s, &part, &before, target)?;
            }
            (Some(_), ..) => {}
            (None, ..) => self.dir.set_applied(Some(target))?,
        }
        Ok(())
    }

    /// Reads the objects in `scope` and the classes above them (`Scope::ancestors`).
    fn read_scope(
        &mut self,
        target: &Target,
        scope: Scope,
        prev: &Target,
    ) -> Result<(Live, Scope), ApplyError> {
        let live = read_target_scoped(self.kernel, target, Some(&scope))?;
        let above = scope.ancestors(&live, prev);
        if above.is_empty() {
            return Ok((live, scope));
        }
        let mut scope = scope;
        scope.merge(&above);
        let live = read_target_scoped(self.kernel, target, Some(&scope))?;
        Ok((live, scope))
    }

    /// Undoes an interrupted transaction and reverts an unconfirmed one whose window
    /// closed, first; returns whether it did either.
    fn recover(&mut self) -> Result<bool, ApplyError> {
        let mut recovered = false;
        if let Some(rec) = self.dir.interrupted()? {
            let n = undo_interrupted_locked(self.kernel, self.dir, &rec).map_err(|error| {
                ApplyError::Interrupted {
                    id: rec.id.clone(),
                    error: Box::new(error),
                }
            })?;
            self.note(&format!(
                "netqos: transaction {} ({}) was interrupted; undone to its snapshot first \
                 ({n} change(s))",
                rec.id, rec.source
            ));
            recovered = true;
        }
        Ok(self.close_window()? || recovered)
    }

    /// Locks every device this apply may change: the target's, the last applied policy's,
    /// and those of an interrupted or unconfirmed transaction it may undo first.
    fn lock(&mut self, target: &Target, prev: Option<&Target>) -> Result<DeviceLocks, ApplyError> {
        let mut names = target.devices();
        // Those the last applied policy shaped (their trees go when this one drops them).
        if let Some(prev) = prev {
            names.extend(prev.devices());
        }
        if let Some(r) = self.dir.interrupted()? {
            names.extend(r.target.devices());
        }
        if self.dir.pending()?.is_some()
            && let Some(r) = self.dir.last()?
        {
            names.extend(r.target.devices());
        }
        names.sort();
        names.dedup();
        let (locks, pinned) =
            device_lock::lock_devices(self.kernel, &names, false, &who(self.dir))?;
        self.pinned = pinned;
        Ok(locks)
    }

    /// An earlier apply awaiting confirmation: refused while its window is open (or its
    /// reverter is at work); reverted here when the window closed and its reverter is gone.
    fn close_window(&mut self) -> Result<bool, ApplyError> {
        let Some(p) = self.dir.pending()? else {
            return Ok(false);
        };
        if now() < p.deadline || self.dir.reverter_alive(&p.id) {
            return Err(ApplyError::Pending {
                id: p.id,
                closed: now() >= p.deadline,
            });
        }
        match self.dir.last()?.filter(|r| r.id == p.id) {
            Some(mut rec) => {
                rollback_locked(
                    self.kernel,
                    self.dir,
                    &mut rec,
                    "reverted, not confirmed",
                    &mut Silent,
                )
                .map_err(|error| ApplyError::Interrupted {
                    id: rec.id.clone(),
                    error: Box::new(error),
                })?;
            }
            None => self.dir.set_pending(None)?,
        }
        self.note(&format!(
            "netqos: the confirm window of transaction {} closed {} s ago and its reverter is \
             gone; reverted it first",
            p.id,
            now().saturating_sub(p.deadline)
        ));
        Ok(true)
    }

    /// Says so when a device the target shapes carries a default route and neither a
    /// confirm window nor a guarding resource (a probe) protects the apply: a wrong tree
    /// there can cut the node off (reliability F11). A note only: shaping that NIC is the
    /// common case.
    fn warn_default_route(&mut self, target: &Target) {
        // A caller with a base (the agent) applied these devices before and was told then.
        if self.options.confirm.is_some()
            || self.options.base.is_some()
            || self.resources.iter().any(|r| r.guards())
        {
            return;
        }
        let Ok(routed) = self.kernel.default_route_devices() else {
            return;
        };
        for d in target.devices().iter().filter(|d| routed.contains(d)) {
            self.note(&format!(
                "netqos: warning: {d} carries the default route; a mistake here can cut this \
                 node off. Consider --confirm 120s (reverts unless `netqos confirm` runs) and \
                 --probe tcp:APISERVER:6443"
            ));
        }
    }

    fn record_resources(&self) -> Result<Vec<Recorded>, ApplyError> {
        let mut out = Vec::new();
        for r in &self.resources {
            match r.record(&self.dir.path) {
                Ok(Some(rec)) => out.push(rec),
                Ok(None) => {}
                Err(error) => {
                    return Err(ApplyError::Resource {
                        what: r.describe(),
                        error,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Writes the record (naming it the transaction in flight) and opens its journal;
    /// starts the confirm window. In the transaction log: one synced line.
    fn start(&mut self, run: &Started) -> Result<Journal, ApplyError> {
        let record = &run.record;
        let journal = match (&run.logged, &run.whole, &record.scope) {
            (Some(_), Some((_, before)), Some(scope)) => {
                let before = Before {
                    scope: scope.clone(),
                    part: before.clone(),
                };
                self.dir
                    .wal_begin(record, Some(before))
                    .and_then(|()| self.dir.logged_journal(&record.id))
            }
            _ => self
                .dir
                .save_record(record)
                .and_then(|()| self.dir.set_current(Some(&record.id)))
                .and_then(|()| self.dir.journal(&record.id)),
        }
        .map_err(ApplyError::Unrecorded)?;
        let Some(confirm) = &self.options.confirm else {
            return Ok(journal);
        };
        let pending = Pending {
            id: record.id.clone(),
            deadline: now() + confirm.window.as_secs(),
        };
        self.dir
            .set_pending(Some(&pending))
            .map_err(ApplyError::Unrecorded)?;
        if let Err(e) = confirm.reverter.start(self.dir, &pending) {
            let _ = self.dir.set_pending(None);
            return Err(ApplyError::Reverter(e));
        }
        Ok(journal)
    }

    /// Execute, verify, resources. `Err` is the failure, with the index of the change.
    fn run(&mut self, run: &Started, journal: &mut Journal) -> Result<(), (usize, FailError)> {
        let total = run.changes.len();
        txn::execute(self.kernel, &run.changes, journal, self.options.hooks)
            .map_err(|(n, e)| (n, FailError::Exec(e)))?;
        self.phase("send");
        self.verify(&run.record.target, run.record.scope.as_ref())
            .map_err(|e| (total, e))?;
        self.phase("verify");
        for i in 0..self.resources.len() {
            match self.resources[i].apply(&self.dir.path) {
                Ok(line) => self.note(&line),
                Err(error) => {
                    let what = self.resources[i].describe();
                    return Err((total, FailError::Resource { what, error }));
                }
            }
        }
        self.phase("resources");
        Ok(())
    }

    /// Reads the devices back: the kernel must now hold the target (a change it accepted
    /// but applied differently, or another writer in between, fails the apply).
    fn verify(&mut self, target: &Target, scope: Option<&Scope>) -> Result<(), FailError> {
        if let Some((name, ifindex)) = moved(self.kernel, &self.pinned) {
            return Err(FailError::DeviceChanged { name, ifindex });
        }
        let devices = target.devices();
        let live = match scope {
            Some(s) => self.kernel.read_scoped(&devices, s),
            None => self.kernel.read(&devices),
        }
        .map_err(FailError::VerifyRead)?;
        let left = diff::diff(&live, target, self.options.diff)
            .map_err(|e| FailError::VerifyDiff(Box::new(e)))?;
        match left.first() {
            None => Ok(()),
            Some(first) => Err(FailError::Verify {
                count: left.len(),
                first: first.describe(),
            }),
        }
    }

    fn finish(&mut self, run: &mut Started, result: Result<(), (usize, FailError)>) -> Outcome {
        for w in self.kernel.warnings() {
            self.warn(&format!("netqos: kernel warning: {w}"));
        }
        let (at, error) = match result {
            Ok(()) => return Outcome::Applied(self.succeeded(run)),
            Err(e) => e,
        };
        let failure = Failure {
            id: run.record.id.clone(),
            at,
            total: run.changes.len(),
            error,
        };
        let inverses = self.dir.inverses(&run.record.id);
        let undone = match moved(self.kernel, &self.pinned) {
            Some((name, ifindex)) => Err(UndoError::DeviceChanged { name, ifindex }),
            None => undo(self.kernel, &run.record, &inverses),
        };
        let _ = self.dir.set_pending(None);
        match undone {
            Ok(_) => {
                // The undo point (`last`) stays the previous successful transaction.
                let _ = self.ended(run, "failed, rolled back", false);
                Outcome::RolledBack(failure)
            }
            Err(e) => {
                // Still in flight: the next apply or `netqos rollback` undoes it.
                let _ = self.ended(run, "failed, rollback failed", true);
                Outcome::RollbackFailed(failure, e)
            }
        }
    }

    /// Records how a failed transaction ended; `open`: it is still to be undone.
    fn ended(&mut self, run: &mut Started, outcome: &str, open: bool) -> Result<(), StateError> {
        if run.logged.is_some() {
            run.record.outcome = outcome.to_string();
            return self.dir.wal_end(End {
                id: run.record.id.clone(),
                outcome: outcome.to_string(),
                last: false,
                open,
                applied: None,
            });
        }
        self.dir.set_outcome(&mut run.record, outcome)?;
        if open {
            return Ok(());
        }
        self.dir.set_current(None)
    }

    /// Records a success: its outcome, the undo point, the applied target.
    fn record_success(&mut self, run: &mut Started) -> Result<(), StateError> {
        let dir = self.dir;
        let id = run.record.id.clone();
        if let Some(base) = &run.logged {
            run.record.outcome = "applied".into();
            let applied = run.record.scope.as_ref().map(|scope| Line {
                base: base.clone(),
                id: id.clone(),
                scope: scope.clone(),
                part: run.record.target.clone(),
            });
            return dir.wal_end(End {
                id,
                outcome: "applied".into(),
                last: true,
                open: false,
                applied,
            });
        }
        dir.set_outcome(&mut run.record, "applied")
            .and_then(|()| dir.set_last(&id))
            .and_then(|()| dir.set_current(None))
            .and_then(|()| match (&run.whole, &run.record.scope) {
                (Some((whole, before)), Some(scope)) => {
                    dir.patch_applied(&id, scope, &run.record.target, before, whole)
                }
                _ => dir.replace_applied(&id, &run.record.target),
            })
    }

    fn succeeded(&mut self, run: &mut Started) -> Applied {
        let unrecorded = if self.options.hooks.fail_record {
            Err(StateError::Injected)
        } else {
            self.record_success(run)
        }
        .err();
        self.phase("record");
        Applied {
            id: run.record.id.clone(),
            changes: std::mem::take(&mut run.changes),
            elapsed: run.started.elapsed(),
            confirm: self.options.confirm.as_ref().map(|c| c.window),
            unrecorded,
            scope: run.record.scope.clone(),
        }
    }
}

/// Who holds a device lock, for the refusal of the next one.
fn who(dir: &StateDir) -> String {
    format!(
        "process {}, state directory {}",
        std::process::id(),
        dir.path.display()
    )
}

/// The first pinned device that no longer has its identity under its name (renamed,
/// or deleted and another made in its place): (name, the ifindex the changes went to).
fn moved(kernel: &mut dyn Kernel, pinned: &[(String, DeviceId)]) -> Option<(String, i32)> {
    if pinned.is_empty() {
        return None;
    }
    let names: Vec<String> = pinned.iter().map(|(n, _)| n.clone()).collect();
    let now = kernel.device_ids(&names).ok()?;
    pinned
        .iter()
        .find(|(n, id)| !now.iter().any(|(m, i)| m == n && i == id))
        .map(|(n, id)| (n.clone(), id.ifindex))
}

/// Locks the devices of `record` for a rollback or revert in another process.
fn lock_record(
    kernel: &mut dyn Kernel,
    dir: &StateDir,
    record: &Record,
) -> Result<DeviceLocks, UndoError> {
    Ok(device_lock::lock_devices(kernel, &record.target.devices(), false, &who(dir))?.0)
}

/// Returns the kernel to the record's snapshot (the journal's inverses first), then undoes
/// its recorded resources, newest first. Returns the number of kernel changes sent.
pub fn undo(
    kernel: &mut dyn Kernel,
    record: &Record,
    inverses: &[Change],
) -> Result<usize, UndoError> {
    undo_observed(kernel, record, inverses, &mut Silent)
}

fn undo_observed(
    kernel: &mut dyn Kernel,
    record: &Record,
    inverses: &[Change],
    observer: &mut dyn Observer,
) -> Result<usize, UndoError> {
    let n = txn::restore(
        kernel,
        &record.snapshot,
        &record.target,
        record.scope.as_ref(),
        inverses,
    )?;
    for r in record.resources.iter().rev() {
        match r.undo() {
            Ok(Some(line)) => observer.note(&line),
            Ok(None) => {}
            Err(error) => {
                return Err(UndoError::Resource {
                    what: r.describe(),
                    error,
                });
            }
        }
    }
    Ok(n)
}

/// Undoes an interrupted transaction to its own snapshot (journal inverses first) and
/// records that it ended so; its confirm window, if any, is closed.
pub fn undo_interrupted(
    kernel: &mut dyn Kernel,
    dir: &StateDir,
    record: &Record,
) -> Result<usize, UndoError> {
    let _locks = lock_record(kernel, dir, record)?;
    undo_interrupted_locked(kernel, dir, record)
}

fn undo_interrupted_locked(
    kernel: &mut dyn Kernel,
    dir: &StateDir,
    record: &Record,
) -> Result<usize, UndoError> {
    // What follows writes the per-transaction files: the log goes into them first.
    dir.fold().map_err(UndoError::State)?;
    let n = undo(kernel, record, &dir.inverses(&record.id))?;
    let mut record = record.clone();
    let _ = dir.set_outcome(&mut record, "interrupted, rolled back");
    let _ = dir.set_current(None);
    if dir
        .pending()
        .ok()
        .flatten()
        .is_some_and(|p| p.id == record.id)
    {
        let _ = dir.set_pending(None);
    }
    Ok(n)
}

/// A finished rollback.
#[derive(Debug)]
pub struct RolledBack {
    /// Kernel changes sent.
    pub changes: usize,
    /// The devices are as before, but the state directory could not say so.
    pub unrecorded: Option<StateError>,
}

/// Returns the devices (and resources) of `record` to its snapshot; `reason` becomes its
/// outcome (`rolled back`, `reverted, not confirmed`). The caller holds the state
/// directory's lock; this takes the devices' locks.
pub fn rollback(
    kernel: &mut dyn Kernel,
    dir: &StateDir,
    record: &mut Record,
    reason: &str,
    observer: &mut dyn Observer,
) -> Result<RolledBack, UndoError> {
    let _locks = lock_record(kernel, dir, record)?;
    rollback_locked(kernel, dir, record, reason, observer)
}

fn rollback_locked(
    kernel: &mut dyn Kernel,
    dir: &StateDir,
    record: &mut Record,
    reason: &str,
    observer: &mut dyn Observer,
) -> Result<RolledBack, UndoError> {
    dir.fold().map_err(UndoError::State)?;
    // An apply that awaited confirmation never became the undo point for good: `last`
    // goes back to the one it replaced.
    let unconfirmed = dir
        .pending()
        .ok()
        .flatten()
        .is_some_and(|p| p.id == record.id);
    let changes = undo_observed(kernel, record, &[], observer)?;
    let _ = dir.set_outcome(record, reason);
    let mut unrecorded = dir.restore_applied(&record.id).err();
    if let (true, Some(before)) = (unconfirmed, &record.last_before)
        && dir.last_id().ok().flatten().as_deref() == Some(record.id.as_str())
        && let Err(e) = dir.set_last_to(before.id.as_deref())
    {
        unrecorded.get_or_insert(e);
    }
    let _ = dir.set_pending(None);
    Ok(RolledBack {
        changes,
        unrecorded,
    })
}
