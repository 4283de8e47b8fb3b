//! The agent's loop: apply the policy, then every tick (a quarter second at most) take in
//! kernel events, compare the mirror with the target, and repair what differs; re-load
//! the policy when its files change or on SIGHUP (a policy that does not check is refused
//! and the last good one stays); re-apply when the conflist loses netqos's entry; count
//! everything for `/metrics`; exit 0 on SIGTERM/SIGINT leaving the policy in place.
//!
//! What the loop needs from outside comes through `Host`: loading (check, lower) and
//! applying (the library transaction on top of `Mirrored`). The CLI provides both.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::metrics::{AgentCounters, ClassInfo};
use crate::agent::mirrored::Mirrored;
use crate::agent::notify::Notifier;
use crate::agent::watch::Watch;
use crate::apply::diff;
use crate::apply::model::{Change, H_INGRESS, H_ROOT};
use crate::apply::state::Target;
use crate::apply::state_scope::Scope;
use crate::apply::transaction::Base;

/// A checked, lowered policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub target: Target,
    pub classes: Vec<ClassInfo>,
    pub pods: Option<crate::model::Pods>,
    /// FNV-1a of the policy text and vars, hex.
    pub hash: String,
    /// The conflist the policy patches, if any.
    pub conflist: Option<PathBuf>,
    /// netqos's nftables table as the policy wants it (pod traffic classified at the
    /// source), applied as a resource of every transaction.
    pub nft: crate::apply::nft_table::NftTable,
}

/// How an apply ended, as the loop counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    /// Changes sent and verified, in this scope (`None`: the whole tree).
    Applied(Vec<Change>, Option<Scope>),
    /// Nothing was changed (a device is missing, a foreign root, the state directory).
    NotStarted(String),
    /// The kernel refused; everything was undone.
    RolledBack(String),
    RollbackFailed(String),
}

/// What the loop needs from its caller.
pub trait Host {
    /// Reads and checks the policy; `Err` holds the rendered diagnostics. `Ok(None)`: its
    /// files hash to `current` (the policy in force), so it was not checked again.
    fn load(&mut self, current: Option<&str>) -> Result<Option<Policy>, String>;
    /// Applies the policy (tree and conflist) through the apply transaction; `base`: the
    /// last applied target and what changed since the kernel held it (the transaction then
    /// works only on what changed). `repair`: the policy was in place and drifted, so a
    /// root qdisc someone else put there is replaced (a first apply replaces one only with
    /// `--replace-foreign`).
    fn apply(
        &mut self,
        kernel: &mut Mirrored,
        policy: &Policy,
        base: Option<Base<'_>>,
        repair: bool,
    ) -> Applied;
    /// The resources besides the tc tree that no longer hold what the policy put there,
    /// by drift kind: `conflist` when the CNI conflist lost netqos's entry. This is the
    /// seam for later resources (an nftables table: its own netlink family, watched the
    /// same way, kind `nftables`); each kind named here is counted and repaired by an
    /// apply like the tree.
    fn resource_drift(&mut self, policy: &Policy) -> Vec<&'static str>;
    /// The kernel holds `policy` (after `apply` said so and the loop logged it): work that
    /// is not part of the apply itself, such as the class names for `status` and `top`.
    fn held(&mut self, _policy: &Policy) {}
    /// A line for the log (stderr: the journal under systemd).
    fn log(&mut self, line: &str);
}

/// The state the HTTP thread shows.
#[derive(Debug, Default)]
pub struct Shared {
    pub counters: Mutex<AgentCounters>,
    pub classes: Mutex<Vec<ClassInfo>>,
}

impl Shared {
    fn with<R>(&self, f: impl FnOnce(&mut AgentCounters) -> R) -> R {
        match self.counters.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

/// Options of the loop.
#[derive(Debug, Clone)]
pub struct Config {
    /// The policy file and its vars files (a change re-loads).
    pub policy_files: Vec<PathBuf>,
    pub policy_name: String,
    /// How often the mirror is compared with a full read (the safety net).
    pub resync: Duration,
    /// How long to wait before retrying a repair that failed.
    pub retry: Duration,
}

/// Signals the loop follows (set by signal handlers).
#[derive(Debug, Default, Clone)]
pub struct Signals {
    pub term: Arc<AtomicBool>,
    pub hup: Arc<AtomicBool>,
}

/// The kind of drift a change repairs.
pub fn drift_kind(c: &Change) -> &'static str {
    let qdisc = |parent: u32| match parent {
        H_ROOT => "root_qdisc",
        H_INGRESS => "ingress_hook",
        _ => "leaf_qdisc",
    };
    match c {
        Change::AddLink { .. } | Change::SetLinkUp { .. } | Change::DelLink { .. } => "link",
        Change::AddQdisc { q } | Change::DelQdisc { q } => qdisc(q.parent),
        Change::ReplaceQdisc { new, .. } | Change::ChangeQdisc { new, .. } => qdisc(new.parent),
        Change::AddClass { .. } | Change::ChangeClass { .. } | Change::DelClass { .. } => "class",
        Change::AddFilter { f } | Change::DelFilter { f } => {
            if f.parent & 0xffff_0000 == 0xffff_0000 {
                "ingress_hook"
            } else {
                "filter"
            }
        }
        Change::ReplaceFilter { .. } => "filter",
    }
}

/// FNV-1a (64 bit) of some bytes, hex: the policy hash of the metrics.
pub fn fnv1a(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The loop state.
struct Agent<'a> {
    host: &'a mut dyn Host,
    kernel: &'a mut Mirrored,
    shared: &'a Shared,
    notify: &'a Notifier,
    good: Option<Policy>,
    /// Drift kinds seen and not yet repaired (counted once each).
    open: BTreeSet<&'static str>,
    retry_at: Option<Instant>,
    retry: Duration,
    backoff: Duration,
    /// When the drift being repaired was first seen.
    noticed: Option<Instant>,
    healthy: Result<(), String>,
    /// The kernel held `good`'s target wholly since it was last applied, except for the
    /// objects the mirror says were touched (and `applied.json` says so): the base of the
    /// next apply.
    base_ok: bool,
}

impl Agent<'_> {
    fn set_health(&mut self, h: Result<(), String>) {
        self.healthy = h.clone();
        self.shared.with(|c| {
            c.healthy = h.is_ok();
            c.reason = h.err().unwrap_or_default();
        });
    }

    fn count(&self, outcome: &str) {
        self.shared
            .with(|c| *c.applies.entry(outcome.to_string()).or_default() += 1);
    }

    /// Applies `policy` over `prev` (the target the kernel held, when known); returns
    /// whether it holds now.
    fn apply(&mut self, policy: &Policy, prev: Option<&Target>, why: &str) -> bool {
        let start = Instant::now();
        // The events queued so far, so that the transaction knows what they touched (a
        // failed read is reported by the transaction's own).
        let _ = self.kernel.sync();
        let touched = self.kernel.touched();
        let base = prev.map(|prev| Base {
            prev,
            touched: touched.as_ref(),
        });
        let whole = base.is_none() || touched.is_none();
        let outcome = self
            .host
            .apply(self.kernel, policy, base, why == "drift repair");
        let seen = self.kernel.last_read_seq;
        let secs = start.elapsed().as_secs_f64();
        let (full, partial) = (self.kernel.full_reads, self.kernel.partial_reads);
        self.shared.with(|c| {
            c.last_apply_seconds = secs;
            c.mirror_full_reads = full;
            c.mirror_partial_reads = partial;
        });
        match outcome {
            Applied::Unchanged => {
                if whole {
                    self.kernel.settle(seen, None);
                }
                self.base_ok = true;
                self.count("unchanged");
                self.set_health(Ok(()));
                self.host.held(policy);
                true
            }
            Applied::Applied(changes, scope) => {
                self.kernel.settle(seen, scope.as_ref());
                self.base_ok = true;
                self.count("applied");
                self.host.log(&format!(
                    "{why}: applied {} change(s) in {:.1} ms",
                    changes.len(),
                    secs * 1000.0
                ));
                self.set_health(Ok(()));
                self.host.held(policy);
                true
            }
            Applied::NotStarted(e) => {
                self.host.log(&format!("{why}: not applied: {e}"));
                self.set_health(Err(e));
                false
            }
            Applied::RolledBack(e) => {
                self.count("rolled_back");
                self.host.log(&format!(
                    "{why}: the kernel refused the apply ({e}); undone to the previous state"
                ));
                self.set_health(Err(format!("apply refused by the kernel: {e}")));
                false
            }
            Applied::RollbackFailed(e) => {
                self.count("rollback_failed");
                self.host
                    .log(&format!("{why}: apply failed and its undo failed too: {e}"));
                self.set_health(Err(format!("apply and undo failed: {e}")));
                false
            }
        }
    }

    fn adopt(&mut self, policy: Policy) {
        let loaded = crate::apply::state_dir::now();
        self.shared.with(|c| {
            c.policy_hash = policy.hash.clone();
            c.policy_loaded = loaded;
        });
        if let Ok(mut g) = self.shared.classes.lock() {
            *g = policy.classes.clone();
        }
        self.good = Some(policy);
    }

    /// Re-loads the policy: a good one is applied (and kept if the kernel takes it);
    /// a bad one is refused and the last good one stays.
    fn reload(&mut self, why: &str) {
        self.reload_since(why, None);
    }

    /// `reload`, for files that changed at `since` (their newest change time): the log
    /// says how long after it the new policy was in force (file change to verified apply).
    fn reload_since(&mut self, why: &str, since: Option<std::time::SystemTime>) {
        self.notify.send("RELOADING=1");
        let started = Instant::now();
        let current = self.good.as_ref().map(|g| g.hash.clone());
        let loaded = self.host.load(current.as_deref());
        let why = format!(
            "{why} (read and checked in {:.1} ms)",
            started.elapsed().as_secs_f64() * 1000.0
        );
        let why = why.as_str();
        match loaded {
            Err(diags) => {
                self.count("refused");
                self.host.log(&format!(
                    "{why}: the new policy does not check; keeping the last good one\n{diags}"
                ));
            }
            Ok(None) => {
                let hash = current.unwrap_or_default();
                self.host.log(&format!("{why}: policy unchanged ({hash})"));
            }
            Ok(Some(p)) => {
                let good = self.good.take();
                let prev = good.as_ref().filter(|_| self.base_ok).map(|g| &g.target);
                if good.as_ref().is_some_and(|g| g.hash == p.hash) {
                    self.host
                        .log(&format!("{why}: policy unchanged ({})", p.hash));
                    self.good = good;
                } else if self.apply(&p, prev, why) {
                    let after = since
                        .and_then(|t| t.elapsed().ok())
                        .map(|d| {
                            format!(", {:.1} ms after the file changed", d.as_secs_f64() * 1e3)
                        })
                        .unwrap_or_default();
                    self.host
                        .log(&format!("{why}: now enforcing policy {}{after}", p.hash));
                    self.adopt(p);
                    self.open.clear();
                    self.noticed = None;
                } else {
                    self.good = good;
                }
            }
        }
        self.notify.send("READY=1");
    }

    /// What differs between the mirror and the target (empty: no drift): only the objects
    /// events touched when the kernel is known to have held the target. A device that
    /// does not exist (and is not an IFB netqos creates) counts as `link` drift.
    fn drift(&mut self, target: &Target) -> Result<(Vec<Change>, BTreeSet<&'static str>), String> {
        use crate::apply::kernel::Kernel;
        self.kernel.sync().map_err(|e| e.to_string())?;
        let scope = if self.base_ok {
            self.kernel.touched()
        } else {
            None
        };
        let devices = target.devices();
        let live = match &scope {
            Some(s) => self.kernel.read_scoped(&devices, s),
            None => self.kernel.read(&devices),
        }
        .map_err(|e| e.to_string())?;
        let seen = self.kernel.last_read_seq;
        let mut kinds = BTreeSet::new();
        for d in &live.devs {
            let created = target
                .links
                .iter()
                .any(|(n, l)| n == &d.name && l.is_some());
            if !d.exists && !created {
                kinds.insert("link");
            }
        }
        if !kinds.is_empty() {
            return Ok((Vec::new(), kinds));
        }
        let opts = diff::Options {
            replace_foreign: true,
        };
        let part = scope.as_ref().map(|s| s.restrict_target(target));
        let changes =
            diff::diff(&live, part.as_ref().unwrap_or(target), opts).map_err(|e| e.to_string())?;
        if changes.is_empty() {
            self.kernel.settle(seen, scope.as_ref());
        }
        kinds.extend(changes.iter().map(drift_kind));
        Ok((changes, kinds))
    }

    /// Compares the mirror with the target and repairs what differs.
    fn check_drift(&mut self, woke: Instant) {
        let Some(policy) = self.good.take() else {
            return;
        };
        self.check_drift_of(&policy, woke);
        self.good = Some(policy);
    }

    fn check_drift_of(&mut self, policy: &Policy, woke: Instant) {
        let (changes, mut kinds) = match self.drift(&policy.target) {
            Ok(d) => d,
            Err(e) => {
                self.host.log(&format!("reading the kernel: {e}"));
                return;
            }
        };
        kinds.extend(self.host.resource_drift(policy));
        if kinds.is_empty() {
            if !self.open.is_empty() {
                // Put back by someone else: nothing left to repair.
                self.open.clear();
                self.noticed = None;
            }
            if self.healthy.is_err() && self.retry_at.is_none() {
                self.set_health(Ok(()));
            }
            return;
        }
        let new: Vec<&'static str> = kinds.difference(&self.open).copied().collect();
        for k in &new {
            self.shared
                .with(|c| *c.drift_events.entry((*k).to_string()).or_default() += 1);
        }
        if !new.is_empty() {
            let what: Vec<String> = changes.iter().take(5).map(Change::describe).collect();
            self.host.log(&format!(
                "drift ({}): {}{}",
                kinds.iter().copied().collect::<Vec<_>>().join(", "),
                if what.is_empty() {
                    "a device of the policy is missing".to_string()
                } else {
                    what.join("; ")
                },
                if changes.len() > 5 {
                    format!(" and {} more", changes.len() - 5)
                } else {
                    String::new()
                }
            ));
        }
        if self.open.is_empty() {
            self.noticed = Some(woke);
        }
        self.open.extend(new);
        if kinds.contains("link") && changes.is_empty() {
            // A device is gone: wait for it to come back (a link event re-reads it).
            self.set_health(Err("a device of the policy is missing".into()));
            return;
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let prev = self.base_ok.then_some(&policy.target);
        if self.apply(policy, prev, "drift repair") {
            if let Some(t) = self.noticed.take() {
                let secs = t.elapsed().as_secs_f64();
                self.shared.with(|c| c.last_repair_seconds = secs);
                self.host.log(&format!(
                    "drift repaired {:.1} ms after it was seen",
                    secs * 1000.0
                ));
            }
            for k in std::mem::take(&mut self.open) {
                self.shared
                    .with(|c| *c.drift_repairs.entry(k.to_string()).or_default() += 1);
            }
            self.retry_at = None;
            self.backoff = self.retry;
        } else {
            // Retried with a doubling delay (up to five minutes) until it holds.
            self.retry_at = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(Duration::from_secs(300));
        }
    }
}

impl Agent<'_> {
    /// Waits up to `tick` for kernel events; how many arrived (0 after a failed wait,
    /// logged, having slept the tick).
    fn wait(&mut self, tick: Duration, also: Option<std::os::fd::BorrowedFd<'_>>) -> usize {
        match self.kernel.wait(tick, also) {
            Ok(n) => n,
            Err(e) => {
                self.host.log(&format!("kernel events: {e}"));
                std::thread::sleep(tick);
                0
            }
        }
    }

    /// Re-reads every device of the held policy into the mirror, logging when the
    /// mirror had drifted from the kernel (a missed event).
    fn resync(&mut self) {
        let devices = self
            .good
            .as_ref()
            .map(|p| p.target.devices())
            .unwrap_or_default();
        let _ = self.kernel.sync();
        let before = self.kernel.mirror().map(|m| m.live().clone());
        if let Ok(fresh) = self.kernel.reread(&devices)
            && before.is_some_and(|b| b.devs != fresh.devs)
        {
            self.host
                .log("resync: the mirror differed from the kernel; re-read everything");
        }
    }
}

/// The newest status-change time (ctime: a write, or a rename over) of `files`.
fn changed_at(files: &[PathBuf]) -> Option<std::time::SystemTime> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .filter_map(|m| {
            let secs = u64::try_from(m.ctime()).ok()?;
            let nanos = u32::try_from(m.ctime_nsec()).ok()?;
            std::time::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
        })
        .max()
}

/// The policy the agent starts with (exit 1 when it does not load), and a first read of
/// its devices into the mirror (exit 3).
fn first_policy(host: &mut dyn Host, kernel: &mut Mirrored) -> Result<Policy, (u8, String)> {
    let first = host
        .load(None)
        .map_err(|d| (1, d))?
        .ok_or((1, "the policy did not load".to_string()))?;
    kernel
        .reread(&first.target.devices())
        .map_err(|e| (3, e.to_string()))?;
    Ok(first)
}

/// Runs the agent until SIGTERM. `Err` when the first policy does not load (exit 1) or
/// the kernel cannot be read (exit 3); the first apply failing does not stop the agent
/// (it is unhealthy and retries).
pub fn run(
    host: &mut dyn Host,
    kernel: &mut Mirrored,
    config: &Config,
    shared: &Shared,
    signals: &Signals,
) -> Result<(), (u8, String)> {
    let notify = Notifier::from_env();
    shared.with(|c| c.reason = "starting: the policy is not applied yet".into());
    let first = first_policy(host, kernel)?;
    let mut watched = config.policy_files.clone();
    watched.extend(first.conflist.iter().cloned());
    let mut watch = Watch::new(&watched);
    let mut agent = Agent {
        host,
        kernel,
        shared,
        notify: &notify,
        good: None,
        open: BTreeSet::new(),
        retry_at: None,
        retry: config.retry,
        backoff: config.retry,
        noticed: None,
        healthy: Ok(()),
        base_ok: false,
    };
    if agent.apply(&first, None, "start") {
        agent.host.log(&format!(
            "{}: enforcing policy {}",
            config.policy_name, first.hash
        ));
    }
    // Even when the first apply failed this is the policy to hold (retried on drift).
    agent.adopt(first);
    notify.send("READY=1");
    notify.send(&format!("STATUS=enforcing {}", config.policy_name));
    let mut last_ping = Instant::now();
    let mut last_resync = Instant::now();
    let tick = Duration::from_millis(250);
    while !signals.term.load(Ordering::SeqCst) {
        if signals.hup.swap(false, Ordering::SeqCst) {
            agent.reload("SIGHUP");
        }
        let changed = watch.changed();
        if changed.iter().any(|p| config.policy_files.contains(p)) {
            let since = changed_at(&changed);
            agent.reload_since("policy file changed", since);
        }
        let events = agent.wait(tick, watch.wake());
        // When the loop learnt of what it is about to look at (the event or file change).
        let woke = Instant::now();
        let _ = agent.kernel.take_events();
        if last_resync.elapsed() >= config.resync {
            last_resync = Instant::now();
            agent.resync();
        }
        if events > 0
            || !changed.is_empty()
            || agent.retry_at.is_some_and(|t| Instant::now() >= t)
            || last_resync.elapsed() < tick
        {
            agent.check_drift(woke);
        }
        if let Some(w) = notify.watchdog
            && last_ping.elapsed() >= w
        {
            notify.send("WATCHDOG=1");
            last_ping = Instant::now();
        }
    }
    notify.send("STOPPING=1");
    agent
        .host
        .log("SIGTERM: stopping; the policy stays in place");
    Ok(())
}
